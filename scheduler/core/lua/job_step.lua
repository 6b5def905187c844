-- ARGV: job id, most tasks to handle.  One more step of the job's op (lib_ops.lua), by the
-- client that started it or, if that one stopped midway, by the leading scheduler.
-- Returns {'done' | 'more', celery id, mode, ...} (the revokes of what the step stopped).
local out = {}
local done = step_op(ARGV[1], tonumber(ARGV[2]), out)
if not done then
  out[#out] = nil
  out[#out] = nil
end
table.insert(out, 1, done and 'done' or 'more')
return out
