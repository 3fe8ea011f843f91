-- tools/current_time — the current date and time (UTC), for models that
-- otherwise guess.
return tool{
  name = "current_time",
  description = "The current date and time in UTC (ISO 8601), the weekday and the Unix time.",
  params = { type = "object", properties = {} },
  timeout = 1000,
  run = function()
    local now = time.now()
    return { utc = os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(now)), weekday = os.date("!%A", math.floor(now)),
             unix = math.floor(now) }
  end,
}
