-- wrk script: POST /seckill for random users of a population.
--   SECKILL_USERS  population size (default 1000000)
--   SECKILL_ITEM   item id (default "demo")
--   SECKILL_PACE   offered req/s over all connections together (unset or 0:
--                  closed loop, every connection sends its next request as
--                  soon as its answer arrives)
--   SECKILL_THREADS wrk's -t, needed with SECKILL_PACE (each wrk thread offers
--                  its share SECKILL_PACE / SECKILL_THREADS)
--   SECKILL_TOKENS a file of admission tokens, line i for user u<i>
--                  (loadtest/run.sh --admission): each request carries its
--                  user's as Authorization: Bearer
-- Pacing: each wrk thread draws send times from a Poisson process at its
-- share of the rate (exponential gaps, so the connections do not fire in
-- lockstep) and hands the next free time slot to whichever of its connections
-- asks for one (wrk's delay() hook, called once per request). Slots are
-- absolute times, so the offered rate does not drift with the latency or with
-- rounding to wrk's whole milliseconds; a connection that is free only after
-- its slot sends at once (the schedule catches up), but the schedule never
-- runs more than 1 s behind: past that the gateway cannot keep up and the run
-- is closed loop again. wrk starts a request's latency clock when it writes
-- the request, so latency is the response time, not the wait for the slot.
-- Prints per-status counts merged across wrk threads, latency percentiles and
-- one machine-readable line starting with "SUMMARY".

local users = tonumber(os.getenv("SECKILL_USERS") or "1000000")
local item = os.getenv("SECKILL_ITEM") or "demo"
local pace = tonumber(os.getenv("SECKILL_PACE") or "0")
local token_file = os.getenv("SECKILL_TOKENS") or ""
local tokens = nil
local threads = {}
local counter = 0

if pace == nil or pace < 0 then
   error("SECKILL_PACE: expected a number of requests per second, got " .. os.getenv("SECKILL_PACE"))
end
if pace > 0 then
   local nthreads = tonumber(os.getenv("SECKILL_THREADS") or "")
   if nthreads == nil or nthreads < 1 then
      error("SECKILL_PACE needs SECKILL_THREADS (wrk's -t)")
   end
   local ffi = require("ffi")
   ffi.cdef[[
      struct seckill_timespec { long tv_sec; long tv_nsec; };
      int clock_gettime(int clk, struct seckill_timespec *ts);
   ]]
   local ts = ffi.new("struct seckill_timespec")
   local function now_ms()
      ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
      return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
   end
   local mean_gap_ms = 1000 * nthreads / pace -- between this thread's sends
   local max_lag_ms = 1000
   local slot = nil -- this thread's next send time, ms

   -- wrk calls delay() before each request a connection sends and waits that
   -- many whole milliseconds
   function delay()
      local now = now_ms()
      if slot == nil or slot < now - max_lag_ms then
         slot = now
      end
      slot = slot - mean_gap_ms * math.log(1 - math.random()) -- Exp(mean_gap)
      local d = slot - now
      if d <= 0 then return 0 end
      return math.floor(d + 0.5)
   end
end

function setup(thread)
   counter = counter + 1
   thread:set("id", counter)
   table.insert(threads, thread)
end

function init(args)
   statuses = {}
   math.randomseed(os.time() * 1000 + id)
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
   if token_file ~= "" then
      tokens = {}
      for line in io.lines(token_file) do
         tokens[#tokens + 1] = "Bearer " .. line
      end
      if #tokens < users then
         error(string.format("SECKILL_TOKENS: %d tokens for %d users", #tokens, users))
      end
   end
end

function request()
   local user = math.random(1, users)
   if tokens then
      wrk.headers["Authorization"] = tokens[user]
   end
   return wrk.format(nil, "/seckill", nil,
      string.format('{"user_id":"u%d","item_id":"%s"}', user, item))
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
   local merged = {}
   for _, t in ipairs(threads) do
      local s = t:get("statuses")
      for code, n in pairs(s or {}) do
         merged[code] = (merged[code] or 0) + n
      end
   end
   local codes = {}
   for code in pairs(merged) do table.insert(codes, code) end
   table.sort(codes)
   local parts = {}
   for _, code in ipairs(codes) do
      table.insert(parts, string.format("%d=%d", code, merged[code]))
   end
   local secs = summary.duration / 1e6
   local offered = pace > 0 and string.format(" offered_rps=%.0f", pace) or ""
   io.write(string.format("SUMMARY rps=%.0f%s p50_ms=%.2f p99_ms=%.2f p999_ms=%.2f max_ms=%.2f requests=%d " ..
                          "errors_connect=%d errors_read=%d errors_timeout=%d statuses=%s\n",
      summary.requests / secs, offered,
      latency:percentile(50) / 1000, latency:percentile(99) / 1000,
      latency:percentile(99.9) / 1000, latency.max / 1000, summary.requests,
      summary.errors.connect, summary.errors.read, summary.errors.timeout,
      table.concat(parts, ",")))
end
