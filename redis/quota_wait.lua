-- QUOTA_WAIT -- the job waits for its sender. Entries due more than a day
-- ago are dropped (their job went elsewhere).
-- KEYS: wait (the sender's waiting set)
-- ARGV: id due_ms now_ms
--! keys 1
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[3]) - 86400000)
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 1
