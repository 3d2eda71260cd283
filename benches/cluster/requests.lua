-- wrk script for benches/cluster/cluster.py: the request stream of one row, chosen by
-- environment variables, byte-identical for mc-master's store node and upstream's store
-- service.
--
--   BENCH_MODE  get     GET /api/get/<key>, walking the key list
--               exist   GET /api/exist/<key>, walking the key list
--               put     PUT /api/put {"key":"<new key>","value":"<BENCH_VALUE_LEN bytes>"}:
--                       a new key on every request (a per-thread counter), since upstream
--                       keeps the first value of a key and would otherwise write nothing
--               putdel  PUT /api/put of BENCH_VALUE_LEN bytes under one key per thread, then
--                       DELETE /api/remove/<that key>, then the PUT again: every PUT writes a
--                       key that does not exist, the segment never fills, and wrk sends
--                       requests prepared once instead of building a 1 MiB string per
--                       request. Needs one connection per wrk thread (-c = -t) so that each
--                       request follows the previous one on the same connection.
--               rawputdel  the same with PUT /api/put/<key> and the value as the raw body
--                       (mc-master only: upstream's store service has no raw PUT)
--   BENCH_KEYS  the key list for get/exist: either "PREFIX:COUNT" (PREFIX0000000 ...
--               PREFIX<COUNT-1>, 7 digits) or a comma-separated list of keys
--   BENCH_VALUE_LEN  value size of put/putdel (default 64)
--   BENCH_TAG   makes the keys of put/putdel unique across rows and systems
--
-- Requests are built in init() wherever possible, so that wrk spends its share of the two
-- cores sending them rather than running Lua; `put` formats only the key per request and
-- splices it into a request prepared once (the key has a fixed width, so Content-Length is
-- known in advance).

local mode = os.getenv("BENCH_MODE") or "get"
local keyspec = os.getenv("BENCH_KEYS") or "k-:1000"
local value_len = tonumber(os.getenv("BENCH_VALUE_LEN") or "64")
local tag = os.getenv("BENCH_TAG") or "0"

local next_tid = 0
function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end

local reqs = {}
local nreqs = 0
local n = 0
local head, tail
local MARK = "\1KEY\1"

local function keys()
  local out = {}
  local prefix, count = keyspec:match("^(.*):(%d+)$")
  if prefix then
    for j = 0, tonumber(count) - 1 do
      out[#out + 1] = prefix .. string.format("%07d", j)
    end
  else
    for k in keyspec:gmatch("[^,]+") do
      out[#out + 1] = k
    end
  end
  return out
end

local function put_key(i)
  return string.format("p-%s-%d-%010d", tag, tid, i)
end

function init(args)
  tid = tid or 0
  if mode == "get" or mode == "exist" then
    local ks = keys()
    local path = mode == "get" and "/api/get/" or "/api/exist/"
    -- each thread starts at another offset, so threads do not read the same key in step
    local off = (tid * 7919) % #ks
    for j = 0, #ks - 1 do
      reqs[j + 1] = wrk.format("GET", path .. ks[((j + off) % #ks) + 1])
    end
  elseif mode == "rawputdel" then
    local k = put_key(0)
    reqs = { wrk.format("PUT", "/api/put/" .. k, nil, string.rep("v", value_len)),
             wrk.format("DELETE", "/api/remove/" .. k) }
  elseif mode == "put" or mode == "putdel" then
    local body = '{"key":"' .. MARK .. '","value":"' .. string.rep("v", value_len) .. '"}'
    local req = wrk.format("PUT", "/api/put", { ["Content-Type"] = "application/json" }, body)
    local len = #body - #MARK + #put_key(0)
    req = req:gsub("Content%-Length: %d+", "Content-Length: " .. len, 1)
    local at = req:find(MARK, 1, true)
    head, tail = req:sub(1, at - 1), req:sub(at + #MARK)
    if mode == "putdel" then
      local k = put_key(0)
      reqs = { head .. k .. tail, wrk.format("DELETE", "/api/remove/" .. k) }
    end
  else
    error("unknown BENCH_MODE " .. mode)
  end
  nreqs = #reqs
end

function request()
  n = n + 1
  if nreqs > 0 then
    return reqs[((n - 1) % nreqs) + 1]
  end
  return head .. put_key(n) .. tail
end
