"""The state core: the rules as data (schema), the Redis store and its Lua scripts, ids and
sweeps.  Everything that changes a state goes through here."""
