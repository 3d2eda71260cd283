-- wrk script for benches/load.py: one script, the request shape chosen by environment
-- variables so that mc-master and upstream Mooncake get byte-identical request streams.
--
--   BENCH_MODE   single  GET <BENCH_PATH><key>            (query_key, REST get / exist)
--                batch   GET <BENCH_PATH>k1,k2,...,kN      (batch_query_keys, N = BENCH_BATCH)
--                put     PUT <BENCH_PATH> {"key":"<new key>","value":"<BENCH_VALUE_LEN bytes>"}
--                rawput  PUT <BENCH_PATH><new key> with BENCH_VALUE_LEN raw bytes (mc-master only)
--                bigget  GET <BENCH_PATH><big key>         (BENCH_BIG values big-00000...)
--   BENCH_DELETE_PATH  with put/rawput: every other request deletes the key just put
--                (DELETE <BENCH_DELETE_PATH><key>), and the next PUT writes that key anew, so
--                that 1 MiB puts measure writing rather than eviction of a full segment, and
--                wrk sends prepared requests instead of building 1 MiB strings in Lua. Needs
--                one connection per wrk thread (-c = -t): request() is called per thread, so
--                only then does each request follow the previous one on the same connection.
--   BENCH_KEYS   number of preloaded keys (key-%07d), default 10000
--   BENCH_RUN    a tag that makes the keys of `put` unique across runs
--
-- The requests are built in init() wherever they can be, so that wrk spends its CPU on
-- sending requests rather than in Lua (the two cores are shared by wrk and the server):
-- `single` walks every preloaded key (from a different offset in each thread), `batch`
-- cycles through 1000 batches of keys drawn at random (seeded per thread: both systems get
-- the same sequence). `put` and `rawput` need a new key per request: only the key is
-- formatted per request, spliced into a request prepared once.

local mode = os.getenv("BENCH_MODE") or "single"
local path = os.getenv("BENCH_PATH") or "/query_key?key="
local nkeys = tonumber(os.getenv("BENCH_KEYS") or "10000")
local batch = tonumber(os.getenv("BENCH_BATCH") or "10")
local value_len = tonumber(os.getenv("BENCH_VALUE_LEN") or "64")
local run_tag = os.getenv("BENCH_RUN") or "0"
local nbig = tonumber(os.getenv("BENCH_BIG") or "64")
local delete_path = os.getenv("BENCH_DELETE_PATH")

local next_tid = 0
function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end

local reqs = {}
local nreqs = 0
local i = 0
local head, tail -- the prepared request around the key (put, rawput)
local PLACEHOLDER = "\1KEY\1"

local function key(n)
  return string.format("key-%07d", n % nkeys)
end

function init(args)
  tid = tid or 0
  math.randomseed(1234 + tid)
  if mode == "single" then
    for j = 0, nkeys - 1 do
      reqs[j + 1] = wrk.format("GET", path .. key(j + tid * 7919))
    end
  elseif mode == "batch" then
    for j = 1, 1000 do
      local ks = {}
      for b = 1, batch do
        ks[b] = key(math.random(0, nkeys - 1))
      end
      reqs[j] = wrk.format("GET", path .. table.concat(ks, ","))
    end
  elseif mode == "bigget" then
    for j = 0, nbig - 1 do
      reqs[j + 1] = wrk.format("GET", path .. string.format("big-%05d", (j + tid * 7) % nbig))
    end
  elseif mode == "put" or mode == "rawput" then
    local value = string.rep("v", value_len)
    local req
    if mode == "put" then
      local body = '{"key":"' .. PLACEHOLDER .. '","value":"' .. value .. '"}'
      -- The key has a fixed width, so Content-Length is known in advance.
      local width = #string.format("%s-%s-%d-%010d", mode, run_tag, tid, 0)
      req = wrk.format("PUT", path, { ["Content-Type"] = "application/json" }, body)
      req = req:gsub("Content%-Length: %d+", "Content-Length: " .. (#body - #PLACEHOLDER + width), 1)
    else
      req = wrk.format("PUT", path .. PLACEHOLDER, nil, value)
    end
    local at = req:find(PLACEHOLDER, 1, true)
    head, tail = req:sub(1, at - 1), req:sub(at + #PLACEHOLDER)
    if delete_path then
      local k = string.format("%s-%s-%d-%010d", mode, run_tag, tid, 0)
      reqs = { head .. k .. tail, wrk.format("DELETE", delete_path .. k) }
    end
  end
  nreqs = #reqs
end

function request()
  i = i + 1
  if nreqs > 0 then
    return reqs[((i - 1) % nreqs) + 1]
  elseif mode == "put" or mode == "rawput" then
    return head .. string.format("%s-%s-%d-%010d", mode, run_tag, tid, i) .. tail
  end
  return wrk.format("GET", path)
end
