-- ARGV: field, value, ... of the job record.  Returns the new job id.  Its parents (the
-- `parents` field, job ids) must exist.
for k = 1, #ARGV - 1, 2 do
  if ARGV[k] == 'parents' then check_parents(ARGV[k + 1]) end
end
return create_job(ARGV, now())
