-- Argo CD health check for argoproj.io/Application, installed as argocd-cm key
-- resource.customizations.health.argoproj.io_Application.
--
-- Since Argo CD 1.8 a parent Application does not assess the health of its child Applications, so
-- the sync waves of an app-of-apps would not wait for a child to become healthy. With this check,
-- the parent's sync waits in a wave until every child Application of that wave is Healthy, and
-- fails when one is Degraded. Progressing, Suspended, Missing and Unknown keep it waiting: a
-- manual-sync (prod) child is Missing until a release manager syncs it.
local health = { status = "Progressing", message = "Waiting for the application controller to assess health" }

local status = obj.status
if status == nil or status.health == nil or status.health.status == nil or status.health.status == "" then
  return health
end

-- A child being synced right now still reports the health of what it deployed before.
local operation = status.operationState
if operation ~= nil and (operation.phase == "Running" or operation.phase == "Terminating") then
  health.message = "Sync operation is " .. string.lower(operation.phase)
  if operation.message ~= nil and operation.message ~= "" then
    health.message = health.message .. ": " .. operation.message
  end
  return health
end

local known = { Healthy = true, Progressing = true, Degraded = true, Suspended = true, Missing = true, Unknown = true }
local reported = status.health.status
if known[reported] then
  health.status = reported
else
  health.status = "Unknown"
end

if status.health.message ~= nil and status.health.message ~= "" then
  health.message = status.health.message
else
  local sync = "unknown"
  if status.sync ~= nil and status.sync.status ~= nil then
    sync = status.sync.status
  end
  health.message = "Application health is " .. tostring(reported) .. ", sync status is " .. tostring(sync)
end
return health
