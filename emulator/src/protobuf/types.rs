//! The k8s-pb messages we render as JSON: every message reachable from the kinds `protobuf`
//! accepts, one line each. Generated from k8s-pb 0.9's message definitions (field order) and
//! k8s-openapi's JSON names (only irregular names such as `clusterIP` are spelled out); `..`
//! marks Go's `json:",inline"` embedding. Regenerate when adding kinds.

use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::batch::v1 as batch;
use k8s_pb::api::coordination::v1 as coordination;
use k8s_pb::api::core::v1 as core;
use k8s_pb::api::events::v1 as events;
use k8s_pb::api::policy::v1 as policy;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;

use crate::protobuf_json::json_message;

json_message!(apps::DaemonSet {
    metadata,
    spec,
    status
});
json_message!(apps::DaemonSetCondition {
    r#type,
    status,
    last_transition_time,
    reason,
    message
});
json_message!(apps::DaemonSetSpec {
    selector,
    template,
    update_strategy,
    min_ready_seconds,
    revision_history_limit
});
json_message!(apps::DaemonSetStatus {
    current_number_scheduled,
    number_misscheduled,
    desired_number_scheduled,
    number_ready,
    observed_generation,
    updated_number_scheduled,
    number_available,
    number_unavailable,
    collision_count,
    conditions
});
json_message!(apps::DaemonSetUpdateStrategy {
    r#type,
    rolling_update
});
json_message!(apps::Deployment {
    metadata,
    spec,
    status
});
json_message!(apps::DeploymentCondition {
    r#type,
    status,
    last_update_time,
    last_transition_time,
    reason,
    message
});
json_message!(apps::DeploymentSpec {
    replicas,
    selector,
    template,
    strategy,
    min_ready_seconds,
    revision_history_limit,
    paused,
    progress_deadline_seconds
});
json_message!(apps::DeploymentStatus {
    observed_generation,
    replicas,
    updated_replicas,
    ready_replicas,
    available_replicas,
    unavailable_replicas,
    terminating_replicas,
    conditions,
    collision_count
});
json_message!(apps::DeploymentStrategy {
    r#type,
    rolling_update
});
json_message!(apps::ReplicaSet {
    metadata,
    spec,
    status
});
json_message!(apps::ReplicaSetCondition {
    r#type,
    status,
    last_transition_time,
    reason,
    message
});
json_message!(apps::ReplicaSetSpec {
    replicas,
    min_ready_seconds,
    selector,
    template
});
json_message!(apps::ReplicaSetStatus {
    replicas,
    fully_labeled_replicas,
    ready_replicas,
    available_replicas,
    terminating_replicas,
    observed_generation,
    conditions
});
json_message!(apps::RollingUpdateDaemonSet {
    max_unavailable,
    max_surge
});
json_message!(apps::RollingUpdateDeployment {
    max_unavailable,
    max_surge
});
json_message!(apps::RollingUpdateStatefulSetStrategy {
    partition,
    max_unavailable
});
json_message!(apps::StatefulSet {
    metadata,
    spec,
    status
});
json_message!(apps::StatefulSetCondition {
    r#type,
    status,
    last_transition_time,
    reason,
    message
});
json_message!(apps::StatefulSetOrdinals { start });
json_message!(apps::StatefulSetPersistentVolumeClaimRetentionPolicy {
    when_deleted,
    when_scaled
});
json_message!(apps::StatefulSetSpec {
    replicas,
    selector,
    template,
    volume_claim_templates,
    service_name,
    pod_management_policy,
    update_strategy,
    revision_history_limit,
    min_ready_seconds,
    persistent_volume_claim_retention_policy,
    ordinals
});
json_message!(apps::StatefulSetStatus {
    observed_generation,
    replicas,
    ready_replicas,
    current_replicas,
    updated_replicas,
    current_revision,
    update_revision,
    collision_count,
    conditions,
    available_replicas
});
json_message!(apps::StatefulSetUpdateStrategy {
    r#type,
    rolling_update
});
json_message!(batch::CronJob {
    metadata,
    spec,
    status
});
json_message!(batch::CronJobSpec {
    schedule,
    time_zone,
    starting_deadline_seconds,
    concurrency_policy,
    suspend,
    job_template,
    successful_jobs_history_limit,
    failed_jobs_history_limit
});
json_message!(batch::CronJobStatus {
    active,
    last_schedule_time,
    last_successful_time
});
json_message!(batch::Job {
    metadata,
    spec,
    status
});
json_message!(batch::JobCondition {
    r#type,
    status,
    last_probe_time,
    last_transition_time,
    reason,
    message
});
json_message!(batch::JobSpec {
    parallelism,
    completions,
    active_deadline_seconds,
    pod_failure_policy,
    success_policy,
    backoff_limit,
    backoff_limit_per_index,
    max_failed_indexes,
    selector,
    manual_selector,
    template,
    ttl_seconds_after_finished,
    completion_mode,
    suspend,
    pod_replacement_policy,
    managed_by
});
json_message!(batch::JobStatus {
    conditions,
    start_time,
    completion_time,
    active,
    succeeded,
    failed,
    terminating,
    completed_indexes,
    failed_indexes,
    uncounted_terminated_pods,
    ready
});
json_message!(batch::JobTemplateSpec { metadata, spec });
json_message!(batch::PodFailurePolicy { rules });
json_message!(batch::PodFailurePolicyOnExitCodesRequirement {
    container_name,
    operator,
    values
});
json_message!(batch::PodFailurePolicyOnPodConditionsPattern { r#type, status });
json_message!(batch::PodFailurePolicyRule {
    action,
    on_exit_codes,
    on_pod_conditions
});
json_message!(batch::SuccessPolicy { rules });
json_message!(batch::SuccessPolicyRule {
    succeeded_indexes,
    succeeded_count
});
json_message!(batch::UncountedTerminatedPods { succeeded, failed });
json_message!(coordination::Lease { metadata, spec });
json_message!(coordination::LeaseSpec {
    holder_identity,
    lease_duration_seconds,
    acquire_time,
    renew_time,
    lease_transitions,
    strategy,
    preferred_holder
});
json_message!(core::Affinity {
    node_affinity,
    pod_affinity,
    pod_anti_affinity
});
json_message!(core::AppArmorProfile {
    r#type,
    localhost_profile
});
json_message!(core::AwsElasticBlockStoreVolumeSource { volume_id => "volumeID", fs_type, partition, read_only });
json_message!(core::AzureDiskVolumeSource { disk_name, disk_uri => "diskURI", caching_mode, fs_type, read_only, kind });
json_message!(core::AzureFileVolumeSource {
    secret_name,
    share_name,
    read_only
});
json_message!(core::CSIVolumeSource {
    driver,
    read_only,
    fs_type,
    volume_attributes,
    node_publish_secret_ref
});
json_message!(core::Capabilities { add, drop });
json_message!(core::CephFsVolumeSource {
    monitors,
    path,
    user,
    secret_file,
    secret_ref,
    read_only
});
json_message!(core::CinderVolumeSource { volume_id => "volumeID", fs_type, read_only, secret_ref });
json_message!(core::ClientIpConfig { timeout_seconds });
json_message!(core::ClusterTrustBundleProjection {
    name,
    signer_name,
    label_selector,
    optional,
    path
});
json_message!(core::ConfigMap {
    metadata,
    immutable,
    data,
    binary_data
});
json_message!(core::ConfigMapEnvSource { ..local_object_reference, optional });
json_message!(core::ConfigMapKeySelector { ..local_object_reference, key, optional });
json_message!(core::ConfigMapProjection { ..local_object_reference, items, optional });
json_message!(core::ConfigMapVolumeSource { ..local_object_reference, items, default_mode, optional });
json_message!(core::Container {
    name,
    image,
    command,
    args,
    working_dir,
    ports,
    env_from,
    env,
    resources,
    resize_policy,
    restart_policy,
    restart_policy_rules,
    volume_mounts,
    volume_devices,
    liveness_probe,
    readiness_probe,
    startup_probe,
    lifecycle,
    termination_message_path,
    termination_message_policy,
    image_pull_policy,
    security_context,
    stdin,
    stdin_once,
    tty
});
json_message!(core::ContainerExtendedResourceRequest {
    container_name,
    resource_name,
    request_name
});
json_message!(core::ContainerPort { name, host_port, container_port, protocol, host_ip => "hostIP" });
json_message!(core::ContainerResizePolicy {
    resource_name,
    restart_policy
});
json_message!(core::ContainerRestartRule { action, exit_codes });
json_message!(core::ContainerRestartRuleOnExitCodes { operator, values });
json_message!(core::ContainerState {
    waiting,
    running,
    terminated
});
json_message!(core::ContainerStateRunning { started_at });
json_message!(core::ContainerStateTerminated { exit_code, signal, reason, message, started_at, finished_at, container_id => "containerID" });
json_message!(core::ContainerStateWaiting { reason, message });
json_message!(core::ContainerStatus { name, state, last_state, ready, restart_count, image, image_id => "imageID", container_id => "containerID", started, allocated_resources, resources, volume_mounts, user, allocated_resources_status, stop_signal });
json_message!(core::ContainerUser { linux });
json_message!(core::DownwardAPIProjection { items });
json_message!(core::DownwardAPIVolumeFile {
    path,
    field_ref,
    resource_field_ref,
    mode
});
json_message!(core::DownwardAPIVolumeSource {
    items,
    default_mode
});
json_message!(core::EmptyDirVolumeSource { medium, size_limit });
json_message!(core::EnvFromSource {
    prefix,
    config_map_ref,
    secret_ref
});
json_message!(core::EnvVar {
    name,
    value,
    value_from
});
json_message!(core::EnvVarSource {
    field_ref,
    resource_field_ref,
    config_map_key_ref,
    secret_key_ref,
    file_key_ref
});
json_message!(core::EphemeralContainer { ..ephemeral_container_common, target_container_name });
json_message!(core::EphemeralContainerCommon {
    name,
    image,
    command,
    args,
    working_dir,
    ports,
    env_from,
    env,
    resources,
    resize_policy,
    restart_policy,
    restart_policy_rules,
    volume_mounts,
    volume_devices,
    liveness_probe,
    readiness_probe,
    startup_probe,
    lifecycle,
    termination_message_path,
    termination_message_policy,
    image_pull_policy,
    security_context,
    stdin,
    stdin_once,
    tty
});
json_message!(core::EphemeralVolumeSource {
    volume_claim_template
});
json_message!(core::Event {
    metadata,
    involved_object,
    reason,
    message,
    source,
    first_timestamp,
    last_timestamp,
    count,
    r#type,
    event_time,
    series,
    action,
    related,
    reporting_component,
    reporting_instance
});
json_message!(core::EventSeries {
    count,
    last_observed_time
});
json_message!(core::EventSource { component, host });
json_message!(core::ExecAction { command });
json_message!(core::FcVolumeSource { target_ww_ns => "targetWWNs", lun, fs_type, read_only, wwids });
json_message!(core::FileKeySelector {
    volume_name,
    path,
    key,
    optional
});
json_message!(core::FlexVolumeSource {
    driver,
    fs_type,
    secret_ref,
    read_only,
    options
});
json_message!(core::FlockerVolumeSource { dataset_name, dataset_uuid => "datasetUUID" });
json_message!(core::GcePersistentDiskVolumeSource {
    pd_name,
    fs_type,
    partition,
    read_only
});
json_message!(core::GitRepoVolumeSource {
    repository,
    revision,
    directory
});
json_message!(core::GlusterfsVolumeSource {
    endpoints,
    path,
    read_only
});
json_message!(core::GrpcAction { port, service });
json_message!(core::HostAlias { ip, hostnames });
json_message!(core::HostIp { ip });
json_message!(core::HostPathVolumeSource { path, r#type });
json_message!(core::HttpGetAction {
    path,
    port,
    host,
    scheme,
    http_headers
});
json_message!(core::HttpHeader { name, value });
json_message!(core::ImageVolumeSource {
    reference,
    pull_policy
});
json_message!(core::IscsiVolumeSource {
    target_portal,
    iqn,
    lun,
    iscsi_interface,
    fs_type,
    read_only,
    portals,
    chap_auth_discovery,
    chap_auth_session,
    secret_ref,
    initiator_name
});
json_message!(core::KeyToPath { key, path, mode });
json_message!(core::Lifecycle {
    post_start,
    pre_stop,
    stop_signal
});
json_message!(core::LifecycleHandler {
    exec,
    http_get,
    tcp_socket,
    sleep
});
json_message!(core::LinuxContainerUser {
    uid,
    gid,
    supplemental_groups
});
json_message!(core::LoadBalancerIngress {
    ip,
    hostname,
    ip_mode,
    ports
});
json_message!(core::LoadBalancerStatus { ingress });
json_message!(core::LocalObjectReference { name });
json_message!(core::ModifyVolumeStatus {
    target_volume_attributes_class_name,
    status
});
json_message!(core::Namespace {
    metadata,
    spec,
    status
});
json_message!(core::NamespaceCondition {
    r#type,
    status,
    last_transition_time,
    reason,
    message
});
json_message!(core::NamespaceSpec { finalizers });
json_message!(core::NamespaceStatus { phase, conditions });
json_message!(core::NfsVolumeSource {
    server,
    path,
    read_only
});
json_message!(core::NodeAffinity {
    required_during_scheduling_ignored_during_execution,
    preferred_during_scheduling_ignored_during_execution
});
json_message!(core::NodeSelector {
    node_selector_terms
});
json_message!(core::NodeSelectorRequirement {
    key,
    operator,
    values
});
json_message!(core::NodeSelectorTerm {
    match_expressions,
    match_fields
});
json_message!(core::ObjectFieldSelector {
    api_version,
    field_path
});
json_message!(core::ObjectReference {
    kind,
    namespace,
    name,
    uid,
    api_version,
    resource_version,
    field_path
});
json_message!(core::PersistentVolumeClaim {
    metadata,
    spec,
    status
});
json_message!(core::PersistentVolumeClaimCondition {
    r#type,
    status,
    last_probe_time,
    last_transition_time,
    reason,
    message
});
json_message!(core::PersistentVolumeClaimSpec {
    access_modes,
    selector,
    resources,
    volume_name,
    storage_class_name,
    volume_mode,
    data_source,
    data_source_ref,
    volume_attributes_class_name
});
json_message!(core::PersistentVolumeClaimStatus {
    phase,
    access_modes,
    capacity,
    conditions,
    allocated_resources,
    allocated_resource_statuses,
    current_volume_attributes_class_name,
    modify_volume_status
});
json_message!(core::PersistentVolumeClaimTemplate { metadata, spec });
json_message!(core::PersistentVolumeClaimVolumeSource {
    claim_name,
    read_only
});
json_message!(core::PhotonPersistentDiskVolumeSource { pd_id => "pdID", fs_type });
json_message!(core::Pod {
    metadata,
    spec,
    status
});
json_message!(core::PodAffinity {
    required_during_scheduling_ignored_during_execution,
    preferred_during_scheduling_ignored_during_execution
});
json_message!(core::PodAffinityTerm {
    label_selector,
    namespaces,
    topology_key,
    namespace_selector,
    match_label_keys,
    mismatch_label_keys
});
json_message!(core::PodAntiAffinity {
    required_during_scheduling_ignored_during_execution,
    preferred_during_scheduling_ignored_during_execution
});
json_message!(core::PodCertificateProjection {
    signer_name,
    key_type,
    max_expiration_seconds,
    credential_bundle_path,
    key_path,
    certificate_chain_path,
    user_annotations
});
json_message!(core::PodCondition {
    r#type,
    observed_generation,
    status,
    last_probe_time,
    last_transition_time,
    reason,
    message
});
json_message!(core::PodDnsConfig {
    nameservers,
    searches,
    options
});
json_message!(core::PodDnsConfigOption { name, value });
json_message!(core::PodExtendedResourceClaimStatus {
    request_mappings,
    resource_claim_name
});
json_message!(core::PodIp { ip });
json_message!(core::PodOs { name });
json_message!(core::PodReadinessGate { condition_type });
json_message!(core::PodResourceClaim {
    name,
    resource_claim_name,
    resource_claim_template_name
});
json_message!(core::PodResourceClaimStatus {
    name,
    resource_claim_name
});
json_message!(core::PodSchedulingGate { name });
json_message!(core::PodSecurityContext {
    se_linux_options,
    windows_options,
    run_as_user,
    run_as_group,
    run_as_non_root,
    supplemental_groups,
    supplemental_groups_policy,
    fs_group,
    sysctls,
    fs_group_change_policy,
    seccomp_profile,
    app_armor_profile,
    se_linux_change_policy
});
json_message!(core::PodSpec { volumes, init_containers, containers, ephemeral_containers, restart_policy, termination_grace_period_seconds, active_deadline_seconds, dns_policy, node_selector, service_account_name, service_account, automount_service_account_token, node_name, host_network, host_pid => "hostPID", host_ipc => "hostIPC", share_process_namespace, security_context, image_pull_secrets, hostname, subdomain, affinity, scheduler_name, tolerations, host_aliases, priority_class_name, priority, dns_config, readiness_gates, runtime_class_name, enable_service_links, preemption_policy, overhead, topology_spread_constraints, set_hostname_as_fqdn => "setHostnameAsFQDN", os, host_users, scheduling_gates, resource_claims, resources, hostname_override, workload_ref });
json_message!(core::PodStatus { observed_generation, phase, conditions, message, reason, nominated_node_name, host_ip => "hostIP", host_ips => "hostIPs", pod_ip => "podIP", pod_ips => "podIPs", start_time, init_container_statuses, container_statuses, qos_class, ephemeral_container_statuses, resize, resource_claim_statuses, extended_resource_claim_status, allocated_resources, resources });
json_message!(core::PodTemplate { metadata, template });
json_message!(core::PodTemplateSpec { metadata, spec });
json_message!(core::PortStatus {
    port,
    protocol,
    error
});
json_message!(core::PortworxVolumeSource { volume_id => "volumeID", fs_type, read_only });
json_message!(core::PreferredSchedulingTerm { weight, preference });
json_message!(core::Probe { ..handler, initial_delay_seconds, timeout_seconds, period_seconds, success_threshold, failure_threshold, termination_grace_period_seconds });
json_message!(core::ProbeHandler {
    exec,
    http_get,
    tcp_socket,
    grpc
});
json_message!(core::ProjectedVolumeSource {
    sources,
    default_mode
});
json_message!(core::QuobyteVolumeSource {
    registry,
    volume,
    read_only,
    user,
    group,
    tenant
});
json_message!(core::RbdVolumeSource {
    monitors,
    image,
    fs_type,
    pool,
    user,
    keyring,
    secret_ref,
    read_only
});
json_message!(core::ResourceClaim { name, request });
json_message!(core::ResourceFieldSelector {
    container_name,
    resource,
    divisor
});
json_message!(core::ResourceHealth { resource_id => "resourceID", health });
json_message!(core::ResourceRequirements {
    limits,
    requests,
    claims
});
json_message!(core::ResourceStatus { name, resources });
json_message!(core::ScaleIoVolumeSource {
    gateway,
    system,
    secret_ref,
    ssl_enabled,
    protection_domain,
    storage_pool,
    storage_mode,
    volume_name,
    fs_type,
    read_only
});
json_message!(core::SeLinuxOptions {
    user,
    role,
    r#type,
    level
});
json_message!(core::SeccompProfile {
    r#type,
    localhost_profile
});
json_message!(core::Secret {
    metadata,
    immutable,
    data,
    string_data,
    r#type
});
json_message!(core::SecretEnvSource { ..local_object_reference, optional });
json_message!(core::SecretKeySelector { ..local_object_reference, key, optional });
json_message!(core::SecretProjection { ..local_object_reference, items, optional });
json_message!(core::SecretVolumeSource {
    secret_name,
    items,
    default_mode,
    optional
});
json_message!(core::SecurityContext {
    capabilities,
    privileged,
    se_linux_options,
    windows_options,
    run_as_user,
    run_as_group,
    run_as_non_root,
    read_only_root_filesystem,
    allow_privilege_escalation,
    proc_mount,
    seccomp_profile,
    app_armor_profile
});
json_message!(core::Service {
    metadata,
    spec,
    status
});
json_message!(core::ServiceAccount {
    metadata,
    secrets,
    image_pull_secrets,
    automount_service_account_token
});
json_message!(core::ServiceAccountTokenProjection {
    audience,
    expiration_seconds,
    path
});
json_message!(core::ServicePort {
    name,
    protocol,
    app_protocol,
    port,
    target_port,
    node_port
});
json_message!(core::ServiceSpec { ports, selector, cluster_ip => "clusterIP", cluster_ips => "clusterIPs", r#type, external_ips => "externalIPs", session_affinity, load_balancer_ip => "loadBalancerIP", load_balancer_source_ranges, external_name, external_traffic_policy, health_check_node_port, publish_not_ready_addresses, session_affinity_config, ip_families, ip_family_policy, allocate_load_balancer_node_ports, load_balancer_class, internal_traffic_policy, traffic_distribution });
json_message!(core::ServiceStatus {
    load_balancer,
    conditions
});
json_message!(core::SessionAffinityConfig { client_ip => "clientIP" });
json_message!(core::SleepAction { seconds });
json_message!(core::StorageOsVolumeSource {
    volume_name,
    volume_namespace,
    fs_type,
    read_only,
    secret_ref
});
json_message!(core::Sysctl { name, value });
json_message!(core::TcpSocketAction { port, host });
json_message!(core::Toleration {
    key,
    operator,
    value,
    effect,
    toleration_seconds
});
json_message!(core::TopologySpreadConstraint {
    max_skew,
    topology_key,
    when_unsatisfiable,
    label_selector,
    min_domains,
    node_affinity_policy,
    node_taints_policy,
    match_label_keys
});
json_message!(core::TypedLocalObjectReference {
    api_group,
    kind,
    name
});
json_message!(core::TypedObjectReference {
    api_group,
    kind,
    name,
    namespace
});
json_message!(core::Volume {
    name,
    ..volume_source
});
json_message!(core::VolumeDevice { name, device_path });
json_message!(core::VolumeMount {
    name,
    read_only,
    recursive_read_only,
    mount_path,
    sub_path,
    mount_propagation,
    sub_path_expr
});
json_message!(core::VolumeMountStatus {
    name,
    mount_path,
    read_only,
    recursive_read_only
});
json_message!(core::VolumeProjection { secret, downward_api => "downwardAPI", config_map, service_account_token, cluster_trust_bundle, pod_certificate });
json_message!(core::VolumeResourceRequirements { limits, requests });
json_message!(core::VolumeSource { host_path, empty_dir, gce_persistent_disk, aws_elastic_block_store, git_repo, secret, nfs, iscsi, glusterfs, persistent_volume_claim, rbd, flex_volume, cinder, cephfs, flocker, downward_api => "downwardAPI", fc, azure_file, config_map, vsphere_volume, quobyte, azure_disk, photon_persistent_disk, projected, portworx_volume, scale_io => "scaleIO", storageos, csi, ephemeral, image });
json_message!(core::VsphereVirtualDiskVolumeSource { volume_path, fs_type, storage_policy_name, storage_policy_id => "storagePolicyID" });
json_message!(core::WeightedPodAffinityTerm {
    weight,
    pod_affinity_term
});
json_message!(core::WindowsSecurityContextOptions {
    gmsa_credential_spec_name,
    gmsa_credential_spec,
    run_as_user_name,
    host_process
});
json_message!(core::WorkloadReference {
    name,
    pod_group,
    pod_group_replica_key
});
json_message!(events::Event {
    metadata,
    event_time,
    series,
    reporting_controller,
    reporting_instance,
    action,
    reason,
    regarding,
    related,
    note,
    r#type,
    deprecated_source,
    deprecated_first_timestamp,
    deprecated_last_timestamp,
    deprecated_count
});
json_message!(events::EventSeries {
    count,
    last_observed_time
});
json_message!(meta::Condition {
    r#type,
    status,
    observed_generation,
    last_transition_time,
    reason,
    message
});
json_message!(meta::DeleteOptions {
    grace_period_seconds,
    preconditions,
    orphan_dependents,
    propagation_policy,
    dry_run
});
json_message!(meta::LabelSelector {
    match_labels,
    match_expressions
});
json_message!(meta::LabelSelectorRequirement {
    key,
    operator,
    values
});
json_message!(meta::ListMeta {
    self_link,
    resource_version,
    r#continue,
    remaining_item_count
});
json_message!(meta::ManagedFieldsEntry {
    manager,
    operation,
    api_version,
    time,
    fields_type,
    fields_v1,
    subresource
});
json_message!(meta::ObjectMeta {
    name,
    generate_name,
    namespace,
    self_link,
    uid,
    resource_version,
    generation,
    creation_timestamp,
    deletion_timestamp,
    deletion_grace_period_seconds,
    labels,
    annotations,
    owner_references,
    finalizers
});
json_message!(meta::OwnerReference {
    api_version,
    kind,
    name,
    uid,
    controller,
    block_owner_deletion
});
json_message!(meta::Preconditions {
    uid,
    resource_version
});
json_message!(meta::Status {
    metadata,
    status,
    message,
    reason,
    details,
    code
});
json_message!(meta::StatusCause {
    reason,
    message,
    field
});
json_message!(meta::StatusDetails {
    name,
    group,
    kind,
    uid,
    causes,
    retry_after_seconds
});
json_message!(policy::PodDisruptionBudget {
    metadata,
    spec,
    status
});
json_message!(policy::PodDisruptionBudgetSpec {
    min_available,
    selector,
    max_unavailable,
    unhealthy_pod_eviction_policy
});
json_message!(policy::PodDisruptionBudgetStatus {
    observed_generation,
    disrupted_pods,
    disruptions_allowed,
    current_healthy,
    desired_healthy,
    expected_pods,
    conditions
});
