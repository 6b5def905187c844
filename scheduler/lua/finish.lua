-- ARGV: task id, attempt token, outcome ('exit' | 'lost'), exit code, error, output, cpu_user,
-- cpu_sys, max_rss, retry cap.
-- The worker's last step for an attempt: records the result if the token is still current
-- (end_attempt in lib.lua).  Returns {'ok', end state, error message, celery id, mode, ...} or
-- {'stale', state}.
return end_attempt(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8],
                   ARGV[9], ARGV[10])
