-- hello.lua — the smallest script: arguments in, a line out.
--   moonhive run examples/hello.lua world
local who = arg[1] or "moonhive"
print(("hello, %s!"):format(who))
