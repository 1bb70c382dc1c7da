-- wrk script for callhook's benchmark: realistic status callbacks with unique CallIds and
-- ~10% repeated deliveries (every tenth request of a thread repeats the delivery it sent
-- five requests earlier, like a sender's retry; the two may be in flight at once).
--
-- Every request carries `X-Request-Id: <k>`, its index within the thread, and callhook
-- echoes the header on its answer, so response() knows exactly which request an answer
-- belongs to whatever the number of connections per thread. done() reports, per thread,
-- how many requests were generated and which of them were NOT acknowledged (in flight at
-- the stop, or answered with anything but HTTP 200 and ErrorCode 0); bench/run.py checks
-- the database against that. wrk calls request() once more than it sends (a priming call
-- on thread 0's script before the run starts), so one index per run is never sent and
-- counts as unacknowledged.
--
-- Environment: CALLHOOK_BENCH_RUN (id prefix), CALLHOOK_BENCH_SDKAPPID,
-- CALLHOOK_BENCH_OUT (where done() writes the per-thread results as JSON).

local run = os.getenv("CALLHOOK_BENCH_RUN") or "run"
local sdkappid = os.getenv("CALLHOOK_BENCH_SDKAPPID") or "1400000001"
local path = "/?sdkappid=" .. sdkappid
  .. "&command=call_end&contenttype=json&clientip=10.1.2.3&optplatform=Android"
local headers = { ["Content-Type"] = "application/json" }
local results = { "normal_end", "normal_end", "normal_end", "not_answer", "reject",
  "cancel", "normal_end", "call_busy", "normal_end", "interrupt" }

-- The call's times: two minutes ago when the script loads, the same for every request of
-- the thread (a repeat must be the same body). Current times put the rows in this week's
-- partition on PostgreSQL, as live traffic does; a fixed old date would put them all in the
-- default partition.
local start = os.time() - 120

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
ok_answers = 0
unacked = {}

local function delivery(k)
  if k % 10 == 9 then
    return k - 5
  end
  return k
end

function request()
  local k = sent
  sent = sent + 1
  unacked[k] = true
  local n = delivery(k)
  local call = run .. "-" .. tid .. "-" .. n
  local body = string.format(
    '{"UserId":"user-%d","RoomId":"room-%d","TotalNum":2,"MediaType":"video",'
      .. '"CallType":"single","CallId":"%s","Role":"caller","CallResult":"%s",'
      .. '"EventTime":%d,"StartCallTs":%d,"AcceptTs":%d,"EndTs":%d}',
    n, n, call, results[(n % 10) + 1], start + 17, start, start + 3, start + 12)
  headers["X-Request-Id"] = tostring(k)
  return wrk.format("POST", path, headers, body)
end

function response(status, hdrs, body)
  if status ~= 200 or not string.find(body, '"ErrorCode":0', 1, true) then
    return
  end
  -- Counted apart, so that a missing or unknown echo cannot pass for "nothing acknowledged".
  ok_answers = ok_answers + 1
  local k = tonumber(hdrs["x-request-id"] or hdrs["X-Request-Id"] or "")
  if k ~= nil and unacked[k] then
    unacked[k] = nil
    acked = acked + 1
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
    local list = {}
    for k, _ in pairs(t:get("unacked")) do
      list[#list + 1] = tostring(k)
    end
    if i > 1 then
      f:write(",")
    end
    f:write('{"tid":', t:get("tid"), ',"sent":', t:get("sent"), ',"acked":', t:get("acked"),
      ',"ok_answers":', t:get("ok_answers"),
      ',"unacked":[', table.concat(list, ","), ']}')
  end
  f:write("]}\n")
  f:close()
end
