-- wrk script of compare_http.py: POST structured CloudEvents (JSON format).
--
--   wrk -t1 -c64 -d5s -s cloudevents.lua http://127.0.0.1:PORT/events/ingest.orders -- one
--   wrk -t1 -c8  -d5s -s cloudevents.lua http://127.0.0.1:PORT/events/ingest.orders -- batch 1000
--
-- "one": one event per request, Content-Type application/cloudevents+json,
-- 212 bytes; "batch N": a JSON array of N such events per request,
-- Content-Type application/cloudevents-batch+json.  Every event has its own
-- id, "<random>-<request number, 10 digits>-<index in the batch>", so that a
-- server's duplicate window never drops one, and every request of a run has
-- the same length.  A request is one table.concat of constant pieces and
-- the request number (LuaJIT's gsub over a 220 KB batch takes ms).
--
-- done() prints one line, "WRK-RESULT {json}": requests, events per
-- request, duration, bytes read, the socket and status errors, and the
-- latency mean, percentiles and max in microseconds.

local thread_no = 0

function setup(thread)
   thread:set("thread_no", thread_no)
   thread_no = thread_no + 1
end

local HEAD = '{"specversion":"1.0","type":"com.example.order","source":"/shop","id":"'
local TAIL = '","time":"2026-12-03T16:00:00Z","datacontenttype":"application/json",'
   .. '"data":{"order":1234567,"qty":10,"price":101.25}}'

local batch = 0           -- 0: one event per request
local counter = 0
local parts = {}          -- the request; parts[idx[k]] takes the request number
local idx = {}

function init(args)
   local mode = args[1] or "one"
   if mode == "batch" then
      batch = tonumber(args[2] or "1000")
   elseif mode ~= "one" then
      error("cloudevents.lua: mode 'one' or 'batch N', not " .. tostring(mode))
   end
   math.randomseed(os.time() * 100 + (thread_no or 0))
   local prefix = string.format("%d%09d-", thread_no or 0, math.random(0, 999999999))
   -- the body in pieces: constant text, and a slot for the request number
   local body = {}
   local function slot()
      body[#body + 1] = "0000000000"
      idx[#idx + 1] = #body
   end
   if batch == 0 then
      body[1] = HEAD .. prefix
      slot()
      body[#body + 1] = "-0" .. TAIL
   else
      body[1] = "[" .. HEAD .. prefix
      for i = 1, batch do
         slot()
         body[#body + 1] = "-" .. i .. TAIL .. (i < batch and ("," .. HEAD .. prefix) or "]")
      end
   end
   local size = 0
   for _, p in ipairs(body) do
      size = size + #p
   end
   local ctype = batch == 0 and "application/cloudevents+json"
      or "application/cloudevents-batch+json"
   parts[1] = "POST " .. wrk.path .. " HTTP/1.1\r\nHost: " .. wrk.headers["Host"]
      .. "\r\nContent-Type: " .. ctype .. "\r\nContent-Length: " .. size .. "\r\n\r\n"
   for k, p in ipairs(body) do
      parts[k + 1] = p
   end
   for k = 1, #idx do
      idx[k] = idx[k] + 1
   end
end

function request()
   counter = counter + 1
   local n = string.format("%010d", counter)
   for k = 1, #idx do
      parts[idx[k]] = n
   end
   return table.concat(parts)
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRK-RESULT {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"mean_us":%.1f,"p50_us":%.1f,"p90_us":%.1f,"p99_us":%.1f,"max_us":%.1f,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
      summary.requests, summary.duration, summary.bytes,
      latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
