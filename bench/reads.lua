-- wrk script: reads of tasks by their API, in turn on every connection: the first page of
-- the task list (GET /v1/tasks, all, succeeded or failed, drawn at random), one task
-- (GET /v1/tasks/{id}) and its step log (GET /v1/tasks/{id}/events), for ids drawn at
-- random from IDS_FILE (one id per line). READS picks the kinds, comma-separated:
-- "list,task,events" (the default).
wrk.method = "GET"
wrk.headers["X-API-Key"] = os.getenv("BENCH_KEY") or "bench-key"

local ids = {}
local kinds = {}
local turn = 0

function init(args)
    local file = assert(io.open(os.getenv("IDS_FILE") or "ids.txt", "r"))
    for line in file:lines() do
        if #line > 0 then
            ids[#ids + 1] = line
        end
    end
    file:close()
    assert(#ids > 0, "IDS_FILE holds no ids")
    for kind in string.gmatch(os.getenv("READS") or "list,task,events", "[^,]+") do
        kinds[#kinds + 1] = kind
    end
    math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 1000)
end

local lists = { "/v1/tasks?limit=50", "/v1/tasks?limit=50&status=succeeded", "/v1/tasks?limit=20&status=failed" }

function request()
    turn = turn + 1
    local kind = kinds[(turn % #kinds) + 1]
    local id = ids[math.random(#ids)]
    local path
    if kind == "list" then
        path = lists[math.random(#lists)]
    elseif kind == "task" then
        path = "/v1/tasks/" .. id
    elseif kind == "events" then
        path = "/v1/tasks/" .. id .. "/events"
    else
        error("unknown read kind " .. kind)
    end
    return wrk.format(nil, path)
end
