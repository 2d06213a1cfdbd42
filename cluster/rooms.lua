-- One change to a room shared by signaling instances (cluster/rooms.go), done atomically in
-- Redis: it reads the room, applies the operation, stores the room with its end as expiry,
-- and publishes the new state, with the events each instance delivers to its participants,
-- to every instance concerned. Redis executes scripts one at a time, so every instance sees
-- a room's changes in one order (the version v).
--
-- KEYS[1]: the room's key. ARGV[1]: the request (JSON). ARGV[2]: the instances' sorted set
-- (member: instance id, score: expiry in Unix ms). ARGV[3]: the prefix of instance channels.
--
-- Stored per room: v (version), u (end, Unix ms), cap (admitted at once), e (ended), o (join
-- counter), used (one-visit link ids used), den (denied link keys), p (participants by id:
-- r role, k link key, w waiting, o join order, i instance, g connection generation, a away
-- (within the reconnect grace), at (away since, Unix ms), n (name fixed by the token), s
-- (relayed-message sequence high-water)). Never a name, an address or a message.
local req = cjson.decode(ARGV[1])
local now = req.now
local raw = redis.call('GET', KEYS[1])
local room = nil
if raw then room = cjson.decode(raw) end

local ev = {}
local notify = {}

local function fail(code)
  return cjson.encode({err = code})
end

local function emit(p, t, subj, fields)
  local e = {to = p.id, i = p.i, t = t}
  if subj then e.p = subj.id; e.pr = subj.r end
  if fields then for k, v in pairs(fields) do e[k] = v end end
  ev[#ev + 1] = e
  notify[p.i] = true
end

local function sorted()
  local out = {}
  for _, p in pairs(room.p) do out[#out + 1] = p end
  table.sort(out, function(a, b) return a.o < b.o end)
  return out
end

local function counts()
  local adm, wai = 0, 0
  for _, p in pairs(room.p) do
    if p.w then wai = wai + 1 else adm = adm + 1 end
  end
  return adm, wai
end

local function toAdmitted(except, t, subj, fields)
  for _, p in ipairs(sorted()) do
    if p ~= except and not p.w then emit(p, t, subj, fields) end
  end
end

local function toHosts(except, t, subj, fields)
  for _, p in ipairs(sorted()) do
    if p ~= except and p.r == 'host' then emit(p, t, subj, fields) end
  end
end

local function remove(p, why)
  room.p[p.id] = nil
  notify[p.i] = true
  if p.w then toHosts(p, 'peer-left', p, {why = why}) else toAdmitted(p, 'peer-left', p, {why = why}) end
end

-- Participants of instances that are gone: away past the grace, or connected when their
-- instance stopped answering (its liveness entry expired). Their clients may have taken
-- their place over on another instance before; what is left is gone.
local live = {}
local function alive(inst)
  if inst == req.inst then return true end
  if live[inst] == nil then
    local score = redis.call('ZSCORE', ARGV[2], inst)
    live[inst] = score ~= false and score ~= nil and tonumber(score) >= now
  end
  return live[inst]
end

local function reap()
  for _, p in ipairs(sorted()) do
    if not alive(p.i) and (not p.a or now - (p.at or 0) >= req.grace) then remove(p, 'timeout') end
  end
end

-- check answers whether join() would let a link in as far as the room's state goes (the
-- connection test's GET /v1/rooms/{room}/ice-servers), changing nothing: 'ended', 'denied',
-- 'link_used', or 'ok' (also when the room is not held, or the link's participant is still
-- here: it would take its place over).
local function check()
  if not room or room.u <= now then return 'ok' end
  if room.e then return 'ended' end
  if room.den[req.key] then return 'denied' end
  for _, p in pairs(room.p) do
    if p.k == req.key and (alive(p.i) or (p.a and now - (p.at or 0) < req.grace)) then return 'ok' end
  end
  if req.jti ~= '' and room.used[req.jti] then return 'link_used' end
  return 'ok'
end

local function actor()
  if not room then return nil end
  local a = room.p[req.pid]
  if not a or a.i ~= req.inst or a.g ~= req.gen then return nil end
  return a
end

-- guest finds the guest a host acts on.
local function guest(a)
  if a.r ~= 'host' then return nil, 'not_allowed' end
  local g = room.p[req.target]
  if not g or g == a then return nil, 'no_such_peer' end
  if g.r ~= 'guest' then return nil, 'not_allowed' end
  return g
end

local function join()
  if not room then
    if req.till <= now then return 'ended' end
    if req.existing then return 'draining' end
    room = {v = 0, u = req.till, cap = req.participants, e = false, o = 0, used = {}, den = {}, p = {}}
  end
  if room.e then return 'ended' end
  if room.den[req.key] then return 'denied' end
  reap()
  if req.till > room.u then room.u = req.till end
  if req.maxg > 0 then room.cap = math.max(room.cap, math.min(req.maxg, req.maxguests) + 1) end
  for _, p in pairs(room.p) do
    if p.k == req.key then -- the same link again: it takes its place over
      emit(p, 'replaced', nil, {g = p.g})
      p.i = req.inst; p.g = p.g + 1; p.a = false; p.at = nil
      emit(p, 'welcome', nil, {rc = true, g = p.g})
      if not p.w then toAdmitted(p, 'peer-reconnected', p) end
      return nil
    end
  end
  if req.jti ~= '' and room.used[req.jti] then return 'link_used' end
  local waiting = req.role == 'guest' and not req.nowait
  local adm, wai = counts()
  if (waiting and wai >= req.waiting) or (not waiting and adm >= room.cap) then return 'room_full' end
  room.o = room.o + 1
  local p = {id = req.pid, r = req.role, k = req.key, w = waiting, o = room.o, i = req.inst, g = 1, a = false,
    n = req.nft, s = 0}
  room.p[p.id] = p
  if req.jti ~= '' then room.used[req.jti] = true end
  emit(p, 'welcome', nil, {rc = false, g = 1})
  if waiting then toHosts(p, 'knock', p) else toAdmitted(p, 'peer-joined', p) end
  return nil
end

local function act()
  local a = actor()
  if not a then return 'stale' end
  reap()
  if req.op == 'admit' or req.op == 'deny' or req.op == 'return' then
    local g, why = guest(a)
    if not g then return why end
    if req.op == 'admit' then
      if not g.w then return 'no_such_peer' end
      local adm = counts()
      if adm >= room.cap then return 'room_full' end
      g.w = false
      emit(g, 'admitted')
      toAdmitted(g, 'peer-joined', g)
    elseif req.op == 'deny' then
      room.den[g.k] = true
      emit(g, 'denied')
      remove(g, 'denied')
    else
      if g.w then return 'no_such_peer' end
      toAdmitted(g, 'peer-left', g, {why = 'returned'})
      g.w = true
      emit(g, 'returned')
      toHosts(g, 'knock', g)
    end
  elseif req.op == 'name' then
    if a.n then return 'not_allowed' end
    if a.w then toHosts(a, 'knock', a) else toAdmitted(a, 'peer-name', a) end
  elseif req.op == 'end' then
    if a.r ~= 'host' then return 'not_allowed' end
    room.e = true
    for _, p in ipairs(sorted()) do
      emit(p, 'ended')
      room.p[p.id] = nil
    end
  elseif req.op == 'away' then
    a.a = true; a.at = now; a.s = math.max(a.s or 0, req.seq)
  elseif req.op == 'leave' then
    if req.why == 'timeout' and not a.a then return 'stale' end
    remove(a, req.why)
  elseif req.op == 'sweep' then
    -- reap() did it
  else
    return 'bad_op'
  end
  return nil
end

-- restore puts back this instance's participants after Redis lost the room (a restart
-- without persistence): what one-visit links were used and which were denied is gone.
local function restore()
  if not room then
    room = {v = req.v, u = req.till, cap = req.participants, e = false, o = 0, used = {}, den = {}, p = {}, rs = true}
  end
  if not room.rs then return 'kept' end -- Redis kept it: nothing to put back
  if room.e then return 'ended' end
  room.v = math.max(room.v, req.v)
  if req.till > room.u then room.u = req.till end
  for _, q in ipairs(req.parts) do
    if not room.p[q.id] then
      room.p[q.id] = {id = q.id, r = q.r, k = q.k, w = q.w, o = q.o, i = req.inst, g = q.g, a = q.a, at = q.a and now or nil,
        n = q.n, s = q.s}
      room.o = math.max(room.o, q.o)
    end
  end
  return nil
end

if req.op == 'check' then return cjson.encode({ok = check()}) end

local err
if req.op == 'join' then err = join() elseif req.op == 'restore' then err = restore() else err = act() end
if err then return fail(err) end

room.v = room.v + 1
local parts = {}
for _, p in ipairs(sorted()) do
  parts[#parts + 1] = {id = p.id, r = p.r, w = p.w, o = p.o, i = p.i, g = p.g, a = p.a, s = p.s}
  notify[p.i] = true
end
if (next(room.p) == nil and not room.e and next(room.used) == nil and next(room.den) == nil) or room.u <= now then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], cjson.encode(room), 'PXAT', room.u)
end
local msg = cjson.encode({k = 'state', room = req.room, v = room.v, u = room.u, cap = room.cap, e = room.e,
  parts = parts, ev = ev, names = req.names})
for inst in pairs(notify) do
  redis.call('PUBLISH', ARGV[3] .. inst, msg)
end
return msg
