-- Argo CD health check for privacy-operator.dev/RetentionPolicy.
-- Install as resource.customizations.health.privacy-operator.dev_RetentionPolicy (see
-- ../argocd-cm.yaml). Tested by tests/argocd_health.rs against ../testdata/RetentionPolicy/.
--
-- Degraded:    Failed=True, Stalled=True, Ready=False without Reconciling (the policy is not in
--              force), or the last run of a retention rule failed (until a later run succeeds).
-- Progressing: no status yet, a generation the operator has not seen, Reconciling=True.
-- Healthy:     Ready=True for the current generation. A run Blocked by a legal hold is the
--              hold working as intended, not a fault.
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
  hs.message = "Waiting for the operator to check the retention policy"
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
  hs.message = describe(failed, "The retention policy failed")
  return hs
end

local stalled = condition(conditions, "Stalled")
if is_true(stalled) then
  hs.status = "Degraded"
  hs.message = describe(stalled, "The retention policy is stalled")
  return hs
end

-- A scheduled sweep that failed leaves data past its retention: surface it until a run succeeds.
if status.rules ~= nil then
  for _, rule in ipairs(status.rules) do
    local result = rule.lastResult
    if result ~= nil and result.phase == "Failed" then
      hs.status = "Degraded"
      hs.message = "Retention rule " .. tostring(rule.name) .. " failed"
      if result.message ~= nil and result.message ~= "" then
        hs.message = hs.message .. ": " .. result.message
      end
      return hs
    end
  end
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

-- Unlike a request, a retention policy has no long-running work of its own: Ready=False without
-- Reconciling means it is not in force until someone fixes it.
if ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(ready, "Not ready")
  return hs
end

hs.status = "Progressing"
hs.message = describe(ready, "Waiting for the operator to check the retention policy")
return hs
