-- Argo CD health check for privacy-operator.dev/DataSubjectRequest.
-- Install as resource.customizations.health.privacy-operator.dev_DataSubjectRequest (see
-- ../argocd-cm.yaml). Tested by tests/argocd_health.rs against ../testdata/DataSubjectRequest/.
--
-- Degraded:    Failed=True, Stalled=True (a reference to fix, a duplicate, retries spent), or
--              Overdue=True while the request is not complete (the statutory deadline passed).
-- Suspended:   OnHold=True (a legal hold pauses purges on purpose until a person releases it).
-- Healthy:     Ready=True (complete, restored or cancelled), for the current generation.
-- Progressing: anything else: no status yet, a generation the operator has not seen yet,
--              Reconciling=True, Ready=False/Unknown (work in flight or waiting for a deadline).
local hs = {}

local function condition(conditions, type)
  for _, c in ipairs(conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

local function describe(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c ~= nil and c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

local generation = obj.metadata ~= nil and obj.metadata.generation or nil
local status = obj.status
if status == nil or status.conditions == nil or #status.conditions == 0 then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to accept the request"
  return hs
end

if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local conditions = status.conditions
local ready = condition(conditions, "Ready")
-- A Ready condition written for an older spec says nothing about the current one.
if ready ~= nil and generation ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local failed = condition(conditions, "Failed")
if is_true(failed) then
  hs.status = "Degraded"
  hs.message = describe(failed, "The request failed")
  return hs
end

local stalled = condition(conditions, "Stalled")
if is_true(stalled) then
  hs.status = "Degraded"
  hs.message = describe(stalled, "The request is stalled")
  return hs
end

local overdue = condition(conditions, "Overdue")
if is_true(overdue) and not is_true(ready) then
  hs.status = "Degraded"
  hs.message = describe(overdue, "The statutory deadline passed")
  return hs
end

local hold = condition(conditions, "OnHold")
if is_true(hold) and not is_true(ready) then
  hs.status = "Suspended"
  hs.message = describe(hold, "Paused by a legal hold")
  return hs
end

if is_true(ready) then
  hs.status = "Healthy"
  hs.message = describe(ready, "Complete")
  return hs
end

local reconciling = condition(conditions, "Reconciling")
if is_true(reconciling) then
  hs.status = "Progressing"
  hs.message = describe(reconciling, "In progress")
  return hs
end

hs.status = "Progressing"
hs.message = describe(ready, "In progress")
return hs
