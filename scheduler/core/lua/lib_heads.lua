-- What Celery's tools show of an attempt (scheduler/display.py): for each spec record of the
-- units handed out (a sweep instance's is its master's), the first n bytes of its command
-- (never splitting a UTF-8 character), the command's length, and the sweep's start and step.
-- Read by the dispatch step itself, so showing costs no call of its own, and a task with a
-- megabyte of command no more than one with a word.  Returns spec, head, length, start, step
-- for each spec record.
local function command_heads(units, n)
  local out, seen = {}, {}
  for _, unit in ipairs(units) do
    local spec = master_of(unit) or unit
    if not seen[spec] then
      seen[spec] = true
      local v = redis.call('HMGET', K.task(spec), 'command', 'start', 'step')
      local c = v[1] or ''
      local e = #c
      if e > n then
        e = n
        while e > 0 and (string.byte(c, e + 1) or 0) >= 128 and (string.byte(c, e + 1) or 0) < 192 do
          e = e - 1
        end
      end
      for _, x in ipairs({spec, string.sub(c, 1, e), tostring(#c), v[2] or '', v[3] or ''}) do
        table.insert(out, x)
      end
    end
  end
  return out
end
