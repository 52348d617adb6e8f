-- One P10 entry on its own (a step that changes something audits within its commit).
-- KEYS: audit. ARGV: audit maxlen, the entry's fields...
audit_add(KEYS[1], ARGV[1], {unpack(ARGV, 2)})
return 1
