-- Argo CD health check for privacy-operator.dev/ConsentPolicy.
-- Install as resource.customizations.health.privacy-operator.dev_ConsentPolicy (see
-- ../argocd-cm.yaml). Tested by tests/argocd_health.rs against ../testdata/ConsentPolicy/.
--
-- Degraded:    Failed=True, Stalled=True, or Ready=False without Reconciling (not in force).
-- Progressing: no status yet, a generation the operator has not seen, Reconciling=True.
-- Healthy:     Ready=True for the current generation.
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
  hs.message = "Waiting for the operator to check the consent policy"
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
  hs.message = describe(failed, "The consent policy failed")
  return hs
end

local stalled = condition(conditions, "Stalled")
if is_true(stalled) then
  hs.status = "Degraded"
  hs.message = describe(stalled, "The consent policy is stalled")
  return hs
end

local reconciling = condition(conditions, "Reconciling")
if is_true(reconciling) then
  hs.status = "Progressing"
  hs.message = describe(reconciling, "In progress")
  return hs
end

if is_true(ready) then
  hs.status = "Healthy"
  hs.message = describe(ready, "Policy in force")
  return hs
end

-- Unlike a request, a consent policy has no long-running work of its own: Ready=False without
-- Reconciling means it is not in force until someone fixes it.
if ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(ready, "Not ready")
  return hs
end

hs.status = "Progressing"
hs.message = describe(ready, "Waiting for the operator to check the consent policy")
return hs
