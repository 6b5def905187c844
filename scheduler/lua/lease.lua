-- ARGV: scheduler id, ttl ms.  Take or renew the dispatch lease; 1 if this scheduler holds it.
local k = PREFIX .. ':leader'
local cur = redis.call('GET', k)
if cur == ARGV[1] then
  redis.call('PEXPIRE', k, ARGV[2])
  return 1
elseif not cur then
  redis.call('SET', k, ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
