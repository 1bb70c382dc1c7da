-- wrk script for callhook's benchmark: realistic status callbacks with unique CallIds and
-- ~10% repeated deliveries (every tenth request repeats the delivery sent five requests
-- earlier on the same connection, like a sender's retry).
--
-- Run with as many threads as connections (-t N -c N): each thread then has one
-- connection, so its responses arrive in request order and done() can report exactly
-- which deliveries were acknowledged (request k of a thread is answered by its k-th
-- response; at most one request per thread is in flight when wrk stops). bench/run.py
-- checks those against the database.
--
-- Environment: CALLHOOK_BENCH_RUN (id prefix), CALLHOOK_BENCH_SDKAPPID,
-- CALLHOOK_BENCH_OUT (where done() writes the per-thread counts as JSON).

local run = os.getenv("CALLHOOK_BENCH_RUN") or "run"
local sdkappid = os.getenv("CALLHOOK_BENCH_SDKAPPID") or "1400000001"
local path = "/?sdkappid=" .. sdkappid
  .. "&command=call_end&contenttype=json&clientip=10.1.2.3&optplatform=Android"
local headers = { ["Content-Type"] = "application/json" }
local results = { "normal_end", "normal_end", "normal_end", "not_answer", "reject",
  "cancel", "normal_end", "call_busy", "normal_end", "interrupt" }

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

-- Per thread (each has its own Lua state).
sent = 0
acked = 0
failed = {}

local function delivery(k)
  if k % 10 == 9 then
    return k - 5
  end
  return k
end

-- The request index is the number of responses so far: with one connection per thread a
-- request is generated only after the previous response, and wrk's extra priming call to
-- request() at start-up (whose result is never sent) gets the same index as the first real
-- request, so it cannot shift the numbering.
function request()
  local n = delivery(acked + #failed)
  sent = sent + 1
  local call = run .. "-" .. tid .. "-" .. n
  local body = string.format(
    '{"UserId":"user-%d","RoomId":"room-%d","TotalNum":2,"MediaType":"video",'
      .. '"CallType":"single","CallId":"%s","Role":"caller","CallResult":"%s",'
      .. '"EventTime":1704856890,"StartCallTs":1704856873,"AcceptTs":1704856876,'
      .. '"EndTs":1704856885}',
    n, n, call, results[(n % 10) + 1])
  return wrk.format("POST", path, headers, body)
end

function response(status, hdrs, body)
  if status == 200 and string.find(body, '"ErrorCode":0', 1, true) then
    acked = acked + 1
  else
    failed[#failed + 1] = acked + #failed
  end
end

function done(summary, latency, requests)
  local out = os.getenv("CALLHOOK_BENCH_OUT")
  if out == nil then
    return
  end
  local f = io.open(out, "w")
  f:write('{"duration_us":', summary.duration, ',"requests":', summary.requests,
    ',"errors":', summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.status + summary.errors.timeout,
    ',"p50_us":', latency:percentile(50), ',"p90_us":', latency:percentile(90),
    ',"p99_us":', latency:percentile(99), ',"p999_us":', latency:percentile(99.9),
    ',"max_us":', latency.max, ',"threads":[')
  for i, t in ipairs(threads) do
    local fails = t:get("failed")
    local list = {}
    for _, k in ipairs(fails) do
      list[#list + 1] = tostring(k)
    end
    if i > 1 then
      f:write(",")
    end
    f:write('{"tid":', t:get("tid"), ',"sent":', t:get("sent"), ',"acked":', t:get("acked"),
      ',"failed":[', table.concat(list, ","), ']}')
  end
  f:write("]}\n")
  f:close()
end
