//! The append: one Lua script, run atomically by the server.
//!
//! Redis runs a script to the end without interleaving any other command, but has no
//! rollback: a script that fails half-way keeps its first writes. So the script does every
//! check first and writes only when nothing can fail any more:
//!
//! 1. read the aggregate stream's top entry id: its version (0 when the stream is empty),
//!    and check that the stream holds exactly that many entries (never trimmed, never
//!    deleted from);
//! 2. check that the partition's counter equals its log's length (the same invariant);
//! 3. compare the version with the expected one: on a mismatch return the conflict and
//!    the actual version, having written nothing, unless the events at the expected
//!    versions are these very events (same event ids): then this is a retry of an append
//!    whose reply was lost, and the script reports that append's outcome;
//! 4. only then: take `n` sequence numbers and, for each event, XADD it to the aggregate
//!    stream with id `<version>-0` and to the partition log with id `<seq>-0`.
//!
//! The explicit stream id is a second guard: Redis refuses an id not above the stream's
//! top, so even a broken check could not store two events at one version.
//!
//! All three keys carry the partition's hash tag, so on Redis Cluster they are in one
//! slot and the script runs on one node. The `#!lua` line (Redis 7) makes the server
//! refuse the whole script up front when it is out of memory or cannot accept writes,
//! instead of failing at its first write.

use redis::Script;

/// The append script, exported so that benchmarks drive exactly what the store runs.
pub const APPEND_SCRIPT: &str = SCRIPT;

pub(crate) const SCRIPT: &str = r#"#!lua
-- ordo-redis append.
-- KEYS[1] aggregate stream, KEYS[2] partition log, KEYS[3] partition sequence counter.
-- ARGV[1] expected version or 'any'; ARGV[2] arguments per event (name/value pairs);
-- then that many arguments for each event.
local stream, log, counter = KEYS[1], KEYS[2], KEYS[3]
local expected = ARGV[1]
local width = tonumber(ARGV[2])
local count = (#ARGV - 2) / width
if width == nil or width < 2 or count < 1 or count % 1 ~= 0 then
  return redis.error_reply('ORDO_INVALID malformed append arguments')
end

-- 1. The stream's version is its top entry id.
local current = 0
local top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
if top[1] then
  current = tonumber(string.match(top[1][1], '^(%d+)%-0$'))
  if current == nil then
    return redis.error_reply('ORDO_CORRUPT top entry id ' .. top[1][1] .. ' of ' .. stream .. ' is not <version>-0')
  end
end
if redis.call('XLEN', stream) ~= current then
  return redis.error_reply('ORDO_CORRUPT ' .. stream .. ' at version ' .. current .. ' does not hold ' .. current .. ' entries')
end

-- 2. The partition's counter matches its log.
local seq = tonumber(redis.call('GET', counter) or '0')
if seq == nil or redis.call('XLEN', log) ~= seq then
  return redis.error_reply('ORDO_CORRUPT ' .. counter .. ' disagrees with the length of ' .. log)
end

-- 3. Optimistic concurrency.
if expected ~= 'any' and tonumber(expected) ~= current then
  -- The same append again (same event ids at the versions it asked for): a retry whose
  -- first reply was lost. Report the first one's outcome and write nothing.
  local base_version = tonumber(expected)
  if base_version ~= nil and current - base_version >= count then
    local stored = redis.call('XRANGE', stream, string.format('%d-0', base_version + 1),
      string.format('%d-0', base_version + count))
    local function field(list, offset, length, name)
      for j = 1, length, 2 do
        if list[offset + j] == name then return list[offset + j + 1] end
      end
    end
    local same = #stored == count
    for i = 0, count - 1 do
      if not same then break end
      local sent = field(ARGV, 2 + i * width, width, 'event_id')
      local kept = stored[i + 1][2]
      same = sent ~= nil and sent == field(kept, 0, #kept, 'event_id')
    end
    if same then
      -- The positions of those events (not necessarily contiguous: they may come from
      -- more than one earlier append).
      local reply = {2, base_version + 1}
      for i = 1, count do
        local kept = stored[i][2]
        reply[i + 2] = tonumber(field(kept, 0, #kept, 'seq'))
      end
      return reply
    end
  end
  return {0, current}
end

-- 4. Every check passed: write. Nothing below can fail on a consistent keyspace.
local first_seq = redis.call('INCRBY', counter, count) - count + 1
for i = 0, count - 1 do
  local fields = {}
  local base = 2 + i * width
  for j = 1, width do
    fields[j] = ARGV[base + j]
  end
  local version = string.format('%d', current + 1 + i)
  local position = string.format('%d', first_seq + i)
  fields[width + 1] = 'version'
  fields[width + 2] = version
  fields[width + 3] = 'seq'
  fields[width + 4] = position
  redis.call('XADD', stream, version .. '-0', unpack(fields))
  redis.call('XADD', log, position .. '-0', unpack(fields))
end
return {1, current + 1, first_seq}
"#;

/// The script, with its SHA1 computed once. `Script` sends EVALSHA and loads the script
/// on NOSCRIPT (after a restart or a failover, the script cache is empty).
pub(crate) fn script() -> Script {
    Script::new(SCRIPT)
}

/// What the script answered.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Appended {
        first_version: u64,
        first_seq: u64,
    },
    /// These events were already stored (by an earlier run of the same append), at
    /// these log seqs.
    AlreadyAppended {
        first_version: u64,
        seqs: Vec<u64>,
    },
    Conflict {
        actual: u64,
    },
}

impl Outcome {
    pub(crate) fn from_reply(reply: &[i64]) -> Option<Self> {
        let nonneg = |n: i64| u64::try_from(n).ok();
        match reply {
            [0, actual] => Some(Outcome::Conflict {
                actual: nonneg(*actual)?,
            }),
            [1, first_version, first_seq] => Some(Outcome::Appended {
                first_version: nonneg(*first_version)?,
                first_seq: nonneg(*first_seq)?,
            }),
            [2, first_version, seqs @ ..] if !seqs.is_empty() => Some(Outcome::AlreadyAppended {
                first_version: nonneg(*first_version)?,
                seqs: seqs.iter().map(|s| nonneg(*s)).collect::<Option<_>>()?,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_read_strictly() {
        assert_eq!(
            Outcome::from_reply(&[0, 4]),
            Some(Outcome::Conflict { actual: 4 })
        );
        assert_eq!(
            Outcome::from_reply(&[1, 5, 99]),
            Some(Outcome::Appended {
                first_version: 5,
                first_seq: 99
            })
        );
        assert_eq!(
            Outcome::from_reply(&[2, 5, 10, 12]),
            Some(Outcome::AlreadyAppended {
                first_version: 5,
                seqs: vec![10, 12]
            })
        );
        assert_eq!(Outcome::from_reply(&[2, 5]), None);
        assert_eq!(Outcome::from_reply(&[1, 5]), None);
        assert_eq!(Outcome::from_reply(&[0, -1]), None);
        assert_eq!(Outcome::from_reply(&[]), None);
    }

    #[test]
    fn every_write_comes_after_every_check() {
        let first_write = SCRIPT.find("redis.call('INCRBY'").expect("a write");
        for check in [
            "XREVRANGE",
            "XLEN",
            "'GET'",
            "XRANGE",
            "return {0, current}",
        ] {
            let last = SCRIPT.rfind(check).expect("the check is there");
            assert!(last < first_write, "{check} comes after the first write");
        }
        assert!(
            SCRIPT.starts_with("#!lua\n"),
            "the shebang must be the first line"
        );
    }
}
