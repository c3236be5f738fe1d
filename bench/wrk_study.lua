-- The study flow for wrk (https://github.com/wg/wrk), as bench/loadgen.py runs it, in C.
--
-- One wrk thread per student, each with one connection (wrk -t N -c N): open the deck's
-- study page, then loop flip (GET, htmx) and rate (POST, htmx, with the card token from
-- the last page). A study step is one flip plus one rate. Run by bench/loadgen.py's
-- run_wrk, which passes the students in the file named by STUDY_WRK_STUDENTS (one line
-- each: deck id, cookie header, CSRF token, separated by tabs) and reads what done()
-- prints.
--
-- Latencies are timed here with the monotonic clock (LuaJIT's FFI), per kind of
-- request, from handing wrk the request to its response; a new connection (gunicorn's
-- sync workers close theirs after every response) is opened before request() is called,
-- so the connect itself is not in them.

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } study_timespec;
  int clock_gettime(int clock_id, study_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local clock = ffi.new("study_timespec")

local function now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, clock)
  return tonumber(clock.tv_sec) * 1000000 + tonumber(clock.tv_nsec) / 1000
end

-- Ratings drawn like the bench data's (4 % 1, 6 % 2, 15 % 3, 55 % 4, 20 % 5).
local WEIGHTS = { 4, 6, 15, 55, 20 }
local STALE = "already rated"
local MAX_ERRORS_KEPT = 5

-- Main state: hand each thread its student, and keep the threads for done().
local threads = {}

function setup(thread)
  local index = #threads + 1
  local path = os.getenv("STUDY_WRK_STUDENTS")
  local n = 0
  for line in io.lines(path) do
    n = n + 1
    if n == index then
      local deck, cookie, csrf = line:match("^([^\t]+)\t([^\t]+)\t([^\t]+)$")
      thread:set("deck", deck)
      thread:set("cookie", cookie)
      thread:set("csrf", csrf)
    end
  end
  if n < index then
    error("wrk_study.lua: more threads than students in " .. path)
  end
  thread:set("seed", index)
  table.insert(threads, thread)
end

-- Thread state.
local token, pending, started
local base, htmx, post
local study_path, flip_path, rate_path

function init(args)
  math.randomseed(seed * 1000)
  study_path = "/decks/" .. deck .. "/study/"
  flip_path = study_path .. "flip/?token="
  rate_path = study_path .. "rate/"
  base = { ["Cookie"] = cookie }
  htmx = { ["Cookie"] = cookie, ["HX-Request"] = "true", ["HX-Current-URL"] = study_path }
  post = {
    ["Cookie"] = cookie,
    ["HX-Request"] = "true",
    ["HX-Current-URL"] = study_path,
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["X-CSRFToken"] = csrf,
  }
  -- Read back by done(): counters, and latencies (µs) per kind.
  ratings_ok, ratings_stale, errors, server_errors, finished = 0, 0, 0, 0, false
  -- 1 while a rating is sent and not answered: wrk stops at its deadline without waiting
  -- for the answer, which the server may still have recorded.
  rating_in_flight = 0
  -- Flat tables, one per kind: wrk cannot copy nested tables between threads.
  open_us, flip_us, rate_us = {}, {}, {}
  error_samples = {}
end

local function urlencode(text)
  return (text:gsub("[^%w%-_%.~]", function(c)
    return string.format("%%%02X", string.byte(c))
  end))
end

local function rating()
  local pick, sum = math.random(100), 0
  for value, weight in ipairs(WEIGHTS) do
    sum = sum + weight
    if pick <= sum then
      return value
    end
  end
  return #WEIGHTS
end

function request()
  started = now_us()
  if token == nil then
    pending = "open"
    return wrk.format("GET", study_path, base)
  elseif pending == "open" or pending == "rate" then
    pending = "flip"
    return wrk.format("GET", flip_path .. urlencode(token), htmx)
  else
    pending = "rate"
    rating_in_flight = 1
    local body = "token=" .. urlencode(token) .. "&rating=" .. rating()
    return wrk.format("POST", rate_path, post, body)
  end
end

function response(status, headers, body)
  local kind = pending
  rating_in_flight = 0
  if status ~= 200 then
    errors = errors + 1
    if status >= 500 then
      server_errors = server_errors + 1
    end
    if #error_samples < MAX_ERRORS_KEPT then
      table.insert(error_samples, kind .. ": HTTP " .. status .. ": " .. body:sub(1, 200))
    end
    token = nil -- open the study page again
    return
  end
  local samples = (kind == "open" and open_us) or (kind == "flip" and flip_us) or rate_us
  table.insert(samples, now_us() - started)
  if kind == "rate" then
    if body:find(STALE, 1, true) then
      ratings_stale = ratings_stale + 1
    else
      ratings_ok = ratings_ok + 1
    end
  end
  token = body:match('name="token" value="([^"]+)"')
  if token == nil then
    -- "All done": nothing left to study in this deck.
    finished = true
    wrk.thread:stop()
  end
end

-- Main state again, after the run: one line per student, then its latencies per kind.
function done(summary, latency, requests)
  local socket = summary.errors
  io.write(string.format(
    "SUMMARY\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n",
    summary.duration, summary.requests, socket.connect, socket.read, socket.write,
    socket.status, socket.timeout
  ))
  for index, thread in ipairs(threads) do
    io.write(string.format(
      "STUDENT\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t%s\n",
      index, thread:get("deck"), thread:get("ratings_ok"), thread:get("ratings_stale"),
      thread:get("rating_in_flight"), thread:get("errors"), thread:get("server_errors"),
      tostring(thread:get("finished"))
    ))
    for _, kind in ipairs({ "open", "flip", "rate" }) do
      local values = {}
      for i, value in ipairs(thread:get(kind .. "_us")) do
        values[i] = string.format("%.0f", value)
      end
      io.write("SAMPLES\t", kind, "\t", table.concat(values, ","), "\n")
    end
    for _, text in ipairs(thread:get("error_samples")) do
      io.write("ERROR\t", (text:gsub("[\t\r\n]", " ")), "\n")
    end
  end
end
