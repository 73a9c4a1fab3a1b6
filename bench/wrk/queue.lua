-- Tool calls on one run for bench/queue.py.
--
-- Environment:
--   BENCH_PATH   the run's tool-calls path, e.g. /api/v1/runs/{run}/tool-calls
--   BENCH_KEY    the bearer key
--   BENCH_MODE   "async": POST async `echo` calls (202);
--                "sync": POST a synchronous call (201), then PATCH its result (200)
-- done() prints one JSON line: requests, duration, errors, p50 and p99 in microseconds.

local path = os.getenv("BENCH_PATH")
local mode = os.getenv("BENCH_MODE") or "async"
local headers = {
  ["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY"),
  ["Content-Type"] = "application/json",
}
local bodies = {
  async = '{"name": "echo", "args": {"i": 1}, "async": true}',
  sync = '{"name": "echo", "args": {"i": 1}}',
}
local result = '{"result": {"i": 1}}'
local unpatched = {} -- this thread's sync calls recorded and not yet given their result

function request()
  if mode == "sync" and #unpatched > 0 then
    return wrk.format("PATCH", path .. "/" .. table.remove(unpatched), headers, result)
  end
  return wrk.format("POST", path, headers, bodies[mode])
end

function response(status, headers, body)
  if mode == "sync" and status == 201 then
    unpatched[#unpatched + 1] = body:match('"seq":%s*(%d+)')
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
