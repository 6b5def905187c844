-- ARGV: most units to hand out, most queue entries to look at, bytes of each command's head to
-- return (0: none), then the workers to fill (lib_dispatch.lua).
local names = {}
for k = 4, #ARGV do table.insert(names, ARGV[k]) end
return dispatch_units(tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), names)
