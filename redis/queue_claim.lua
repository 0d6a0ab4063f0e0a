-- CLAIM -- claims one job id (lib/claim.lua).
-- KEYS: ledger workers
-- ARGV: me now heartbeat_ms ttl_ms
--! keys 2
--! include lib/claim.lua
return claim(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]),
             tonumber(ARGV[3]), ARGV[4])
