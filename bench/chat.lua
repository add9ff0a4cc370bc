-- wrk script: POST a fixed chat completion (or BENCH_BODY, for the other protocols'
-- endpoints); with RATE set (requests/s in total), each
-- connection paces itself so the whole run approximates that fixed rate.
--
-- The pause before each request is drawn uniformly from 0 to twice the mean interval
-- (PACING=jitter, the default): the connections drift apart and the requests arrive
-- spread over time, as from independent clients. PACING=fixed keeps the same pause for
-- every request, so all connections fire together and the load comes in bursts of
-- CONNS requests every CONNS/RATE seconds.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = os.getenv("BENCH_KEY") or "bench-key"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_KEY") or "bench-key")
wrk.headers["anthropic-version"] = "2023-06-01"
-- BENCH_HEADERS: more headers, one "Name: value" per line (a peer's routing headers).
for line in string.gmatch(os.getenv("BENCH_HEADERS") or "", "[^\n]+") do
    local name, value = string.match(line, "^%s*([^:]+):%s*(.-)%s*$")
    if name then
        wrk.headers[name] = value
    end
end
wrk.body = os.getenv("BENCH_BODY") or ('{"model":"' .. (os.getenv("BENCH_MODEL") or "gpt-4o-mini") ..
    '","messages":[{"role":"user","content":"Summarise the quarterly report in one line."}]}')

local rate = tonumber(os.getenv("RATE") or "0")
local conns = tonumber(os.getenv("CONNS") or "1")
local jitter = (os.getenv("PACING") or "jitter") ~= "fixed"

-- Each wrk thread gets its own random sequence.
local threads = 0
function setup(thread)
    threads = threads + 1
    thread:set("seed", os.time() * 100 + threads)
end

function init(args)
    math.randomseed(seed or os.time())
end

function delay()
    if rate <= 0 then
        return 0
    end
    local mean = 1000 * conns / rate
    if jitter then
        return math.floor(2 * mean * math.random() + 0.5)
    end
    return mean
end
