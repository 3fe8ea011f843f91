-- headline.lua — a plain script: asks the model for a headline for the text
-- in its arguments and prints it in capitals.

local text = table.concat({ ... }, " ")
local res, err = llm.chat{
  system = "Write one short headline for the text.",
  messages = { { role = "user", content = text } },
}
if not res then error("no headline: " .. err, 0) end
print(res.content:upper())
