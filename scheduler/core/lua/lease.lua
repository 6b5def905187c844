-- ARGV: scheduler id, ttl ms.  Take or renew the dispatch lease; 1 if this scheduler holds it.
local cur = redis.call('GET', K.LEADER)
if cur == ARGV[1] then
  redis.call('PEXPIRE', K.LEADER, ARGV[2])
  return 1
elseif not cur then
  redis.call('SET', K.LEADER, ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
