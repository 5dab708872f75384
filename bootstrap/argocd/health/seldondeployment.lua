-- Argo CD health check for machinelearning.seldon.io/SeldonDeployment (Seldon Core v1).
-- Installed as argocd-cm key resource.customizations.health.machinelearning.seldon.io_SeldonDeployment.
-- Argo CD (gopher-lua, Lua 5.1) runs it with the live object in the global `obj` and reads the
-- returned {status = ..., message = ...}.
--
-- Status fields, from the SeldonDeployment CRD (schemas/machinelearning.seldon.io/seldondeployment_v1.json):
--   status.state                 "Creating" | "Available" | "Failed" (written by the operator)
--   status.description           the reason, set on "Failed"
--   status.deploymentStatus      map: Deployment name -> {replicas, availableReplicas, ...};
--                                the operator omits counts that are zero
--   status.observedGeneration    in the schema (knative duck status) but not set by the v1 operator;
--                                honoured when present
local health = { status = "Progressing", message = "Waiting for the Seldon operator to report a status" }

local status = obj.status
if status == nil or status.state == nil or status.state == "" then
  return health
end

-- A status written for an older spec says nothing about the current one.
local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  health.message = "The Seldon operator has not yet observed generation " .. tostring(generation)
      .. " (last observed " .. tostring(status.observedGeneration) .. ")"
  return health
end

local function described(text)
  if status.description ~= nil and status.description ~= "" then
    return text .. ": " .. status.description
  end
  return text
end

if status.state == "Failed" then
  health.status = "Degraded"
  health.message = described("SeldonDeployment failed")
  return health
end

if status.state == "Creating" then
  health.message = described("SeldonDeployment is being created")
  return health
end

if status.state == "Available" then
  -- The operator can report Available while a rollout of one predictor's Deployment is still
  -- bringing replicas up; wait for every Deployment it lists.
  local waiting = {}
  if type(status.deploymentStatus) == "table" then
    for name, deployment in pairs(status.deploymentStatus) do
      if type(deployment) == "table" then
        local wanted = deployment.replicas or 0
        local available = deployment.availableReplicas or 0
        if available < wanted then
          table.insert(waiting, name .. " " .. tostring(available) .. "/" .. tostring(wanted))
        end
      end
    end
  end
  if #waiting > 0 then
    table.sort(waiting)
    health.message = "SeldonDeployment is available, but replicas are not yet: " .. table.concat(waiting, ", ")
    return health
  end
  health.status = "Healthy"
  health.message = "SeldonDeployment is available"
  return health
end

health.status = "Unknown"
health.message = "Unrecognised SeldonDeployment state: " .. tostring(status.state)
return health
