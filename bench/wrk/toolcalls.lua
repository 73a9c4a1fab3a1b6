-- Tool-call load for bench/peers.py, bench/scale.py and bench/queue.py: every request picks a
-- random target.
--
-- Environment:
--   BENCH_TARGETS  file of "host key run" lines (the Host header, the bearer key, the run id)
--   BENCH_MODE     "post" (POST /runs/{run}/tool-calls), "get" (GET .../tool-calls/{seq}), or
--                  "sync": POST a call (201), then PATCH its result (200); sync uses the first
--                  target only (a response does not say which target its request went to)
--   BENCH_PREFIX   path prefix, e.g. "/api/v1" ("" for the peers)
--   BENCH_SEQS     GET: seq drawn uniformly from 1..BENCH_SEQS (every run holds that many calls)
--   BENCH_BODY     POST: the JSON body (default: a synchronous "search" call)
--   BENCH_SHOW_ERRORS  if set (not "" or "0"), every answer of status 400 or more is written
--                  to stderr (status, body); off by default: wrk then parses every response
-- done() prints one JSON line: requests, duration, errors, p50 and p99 in microseconds.

local mode = os.getenv("BENCH_MODE") or "post"
local prefix = os.getenv("BENCH_PREFIX") or ""
local seqs = tonumber(os.getenv("BENCH_SEQS") or "1")
local body = os.getenv("BENCH_BODY")
  or '{"name": "search", "args": {"q": "flights to LIS", "k": 5}}'

local targets = {}
for line in io.lines(os.getenv("BENCH_TARGETS")) do
  local host, key, run = line:match("^(%S+) (%S+) (%S+)$")
  if host then
    targets[#targets + 1] = {
      path = prefix .. "/runs/" .. run .. "/tool-calls",
      headers = {
        ["Host"] = host,
        ["Authorization"] = "Bearer " .. key,
        ["Content-Type"] = "application/json",
      },
    }
  end
end

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

function init(args)
  -- Each thread draws its own sequence of targets.
  math.randomseed(os.time() * 1000 + (thread_id or 0))
end

local result = '{"result": {"i": 1}}'
local unpatched = {} -- sync: this thread's calls recorded and not yet given their result

function request()
  if mode == "sync" then
    local t = targets[1]
    if #unpatched > 0 then
      return wrk.format("PATCH", t.path .. "/" .. table.remove(unpatched), t.headers, result)
    end
    return wrk.format("POST", t.path, t.headers, body)
  end
  local t = targets[math.random(#targets)]
  if mode == "post" then
    return wrk.format("POST", t.path, t.headers, body)
  end
  return wrk.format("GET", t.path .. "/" .. math.random(seqs), t.headers)
end

local show = os.getenv("BENCH_SHOW_ERRORS")
local show_errors = show ~= nil and show ~= "" and show ~= "0"

if mode == "sync" or show_errors then
  -- Defined only then: wrk parses every response for a script that has response().
  function response(status, headers, response_body)
    if mode == "sync" and status == 201 then
      unpatched[#unpatched + 1] = response_body:match('"seq":%s*(%d+)')
    end
    if show_errors and status >= 400 then
      io.stderr:write(string.format("non-2xx %d %s\n", status, response_body))
    end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "socket_errors": %d, "non_2xx": %d, '
    .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
