package mc

// Reason is a machine-readable code that says why something was refused or
// failed. The same code appears in the log line (key "reason"), the metric
// label, the API error and the WebSocket close frame. Every reason of the
// module is a constant here, so that one code has one spelling.
type Reason string

// Reasons a session ends other than by completing, and signed_in, the reason
// of a completed session.
const (
	ReasonStartTimeout   Reason = "start_timeout"
	ReasonStartFailed    Reason = "start_failed"
	ReasonMachineExited  Reason = "machine_exited"
	ReasonMachineOOM     Reason = "machine_oom" // it exited after an OOM kill inside it
	ReasonMachineMissing Reason = "machine_missing"
	// ReasonMachineEvicted: the cluster took the machine away (its pod was
	// deleted by someone other than the controller, evicted or preempted).
	ReasonMachineEvicted Reason = "machine_evicted"
	// ReasonImagePullFailed: the machine's image cannot be pulled.
	ReasonImagePullFailed Reason = "image_pull_failed"
	// ReasonUnschedulable: no node could take the machine within the
	// configured wait.
	ReasonUnschedulable     Reason = "unschedulable"
	ReasonControllerRestart Reason = "controller_restart"
	ReasonControllerStop    Reason = "controller_shutdown"
	// ReasonStoreUnreachable: the store did not answer in time to record a
	// transition that matters (the session's start, its readiness).
	ReasonStoreUnreachable Reason = "store_unreachable"
	ReasonIdleTimeout      Reason = "idle_timeout"
	ReasonMaxLifetime      Reason = "max_lifetime"
	ReasonLoginTimeout     Reason = "login_timeout"
	ReasonAgentError       Reason = "agent_error"
	ReasonCaptureFailed    Reason = "capture_failed"
	ReasonCancelledByAPI   Reason = "cancelled_by_api"
	ReasonSignedIn         Reason = "signed_in"
)

// Reasons of the handover of sessions between controller replicas.
const (
	// ReasonSessionAdopted marks the event of a session that another
	// replica (or a new process of its own) took over and drives on.
	ReasonSessionAdopted Reason = "session_adopted"
	// ReasonReplicaStopping: the session's replica stopped gracefully.
	ReasonReplicaStopping Reason = "replica_stopping"
	// ReasonHeartbeatStale: the session's replica stopped heartbeating.
	ReasonHeartbeatStale Reason = "heartbeat_stale"
	// ReasonReplicaRestarted: the session's replica restarted under the
	// same name while the session's machine ran on.
	ReasonReplicaRestarted Reason = "replica_restarted"
	ReasonReplicaNotFound  Reason = "replica_not_found"
	ReasonAdoptFailed      Reason = "adopt_failed"
	ReasonHeartbeatFailed  Reason = "heartbeat_failed"
)

// Reasons of the session manager's refusals and failures.
const (
	ReasonUnknownProvider Reason = "unknown_provider"
	ReasonActiveSession   Reason = "active_session"
	ReasonCapacity        Reason = "capacity"
	ReasonSessionEnded    Reason = "session_ended"
	ReasonInternal        Reason = "internal"
	ReasonDestroyFailed   Reason = "destroy_failed"
	ReasonReconcileFailed Reason = "reconcile_failed"
)

// Reasons of the HTTP API's refusals: bad requests and authentication.
const (
	ReasonBadJSON          Reason = "bad_json"
	ReasonUnknownField     Reason = "unknown_field"
	ReasonTrailingData     Reason = "trailing_data"
	ReasonBodyTooLarge     Reason = "body_too_large"
	ReasonBadContentType   Reason = "bad_content_type"
	ReasonBadUserID        Reason = "bad_user_id"
	ReasonBadID            Reason = "bad_id"
	ReasonBadLimit         Reason = "bad_limit"
	ReasonBadCursor        Reason = "bad_cursor"
	ReasonBadState         Reason = "bad_state"
	ReasonNoRoute          Reason = "no_route"
	ReasonMethodNotAllowed Reason = "method_not_allowed"
	ReasonMissingAPIKey    Reason = "missing_api_key"
	ReasonBadAPIKey        Reason = "bad_api_key"
	ReasonNoVault          Reason = "no_vault"
	ReasonPanic            Reason = "panic"
	// ReasonRedirect: the path is not clean; the answer redirects to the
	// clean one.
	ReasonRedirect        Reason = "redirect"
	ReasonBadQuery        Reason = "bad_query"
	ReasonDuplicateKey    Reason = "duplicate_key"
	ReasonUpgradeRequired Reason = "upgrade_required"
	// The refusals that protect the server's file descriptors.
	ReasonTooManyConnections Reason = "too_many_connections"
	ReasonTooManyViewers     Reason = "too_many_viewers"
	ReasonBodyTimeout        Reason = "body_timeout"
)

// Reasons of the stores' errors.
const (
	ReasonBadSession      Reason = "bad_session"
	ReasonBadTransition   Reason = "bad_transition"
	ReasonSessionNotFound Reason = "session_not_found"
	ReasonStale           Reason = "stale"
	ReasonSessionExists   Reason = "session_exists"
	ReasonStoreClosed     Reason = "store_closed"
	ReasonStoreError      Reason = "store_error"
	ReasonStoreBusy       Reason = "store_busy"
	ReasonStoreTimeout    Reason = "store_timeout"
	// ReasonStoreFull: the store is out of disk space (writes answer
	// unavailable until there is space again).
	ReasonStoreFull          Reason = "store_full"
	ReasonBadStorePath       Reason = "bad_store_path"
	ReasonBadStoreURL        Reason = "bad_store_url"
	ReasonListenerLost       Reason = "listener_lost"
	ReasonListenerReconnect  Reason = "listener_reconnect"
	ReasonBadLease           Reason = "bad_lease"
	ReasonPoolExhausted      Reason = "pool_exhausted"
	ReasonBadCredential      Reason = "bad_credential"
	ReasonCredentialNotFound Reason = "credential_not_found"
)

// Reasons of the drivers' and the machine network's errors.
const (
	// ReasonBridgeInUse: the machine network cannot be removed while
	// machines are attached to its bridge.
	ReasonBridgeInUse          Reason = "bridge_in_use"
	ReasonBadSpec              Reason = "bad_spec"
	ReasonBadMachineID         Reason = "bad_machine_id"
	ReasonMachineExists        Reason = "machine_exists"
	ReasonNoMachine            Reason = "no_machine"
	ReasonMachineNotFound      Reason = "machine_not_found"
	ReasonDestroyed            Reason = "destroyed"
	ReasonNoCapacity           Reason = "no_capacity"
	ReasonNoLeaseStore         Reason = "no_lease_store"
	ReasonNoMachineSecrets     Reason = "no_machine_secrets"
	ReasonMachineHashCollision Reason = "machine_hash_collision"
	ReasonBadGeometry          Reason = "bad_geometry"
	ReasonBadMode              Reason = "bad_mode"
	ReasonBadNetwork           Reason = "bad_network"
	ReasonBadBridge            Reason = "bad_bridge"
	ReasonBadSlot              Reason = "bad_slot"
	ReasonBadPortBase          Reason = "bad_port_base"
	ReasonPortBaseEphemeral    Reason = "port_base_ephemeral"
	ReasonNetnsNeedsRoot       Reason = "netns_needs_root"
	ReasonTmpDirExists         Reason = "tmp_dir_exists"
	ReasonTmpDirTooLong        Reason = "tmp_dir_too_long"
	ReasonOrphan               Reason = "orphan"
	ReasonOrphanedMachine      Reason = "orphaned_machine"
	// ReasonClusterUnreachable: a cluster driver cannot list, watch or
	// write what machines are made of (API server down, RBAC, network).
	ReasonClusterUnreachable Reason = "cluster_unreachable"
)

// Reasons of the machine agent's errors and of a login that failed.
const (
	ReasonAgentUnreachable   Reason = "agent_unreachable"
	ReasonMachineUnhealthy   Reason = "machine_unhealthy"
	ReasonMachineStarting    Reason = "machine_starting"
	ReasonBadAgentToken      Reason = "bad_agent_token"
	ReasonBadWait            Reason = "bad_wait"
	ReasonBrowserUnavailable Reason = "browser_unavailable"
	ReasonInvalidProvider    Reason = "invalid_provider"
	ReasonInvalidURL         Reason = "invalid_url"
	ReasonLoginRunning       Reason = "login_running"
	ReasonResultPending      Reason = "result_pending"
	ReasonResultDelivered    Reason = "result_delivered"
	ReasonNoLogin            Reason = "no_login"
	ReasonLoginNotComplete   Reason = "login_not_complete"
	// ReasonLoginCommandFailed: the provider's login command exited
	// non-zero (or could not start) before the credentials were complete.
	ReasonLoginCommandFailed Reason = "login_command_failed"
	// ReasonLoginProgress marks an event that records a login phase change
	// rather than a change of state.
	ReasonLoginProgress Reason = "login_progress"
	// ReasonProviderUnavailable: the provider's CLI is not installed here.
	ReasonProviderUnavailable Reason = "provider_unavailable"
	ReasonBadSince            Reason = "bad_since"
	ReasonCredentialsMissing  Reason = "credentials_missing"
	ReasonBrowserError        Reason = "browser_error"
	ReasonLoginCancelled      Reason = "login_cancelled"
	// ReasonBrowserUnsandboxed: the machine's Chromium reports (on
	// chrome://sandbox) that a layer of its own sandbox is missing.
	ReasonBrowserUnsandboxed Reason = "browser_unsandboxed"
	// ReasonLocalPageFailed: the agent could not answer the browser's
	// request for one of its local pages (the browser got an error page).
	ReasonLocalPageFailed Reason = "local_page_failed"
)

// Reasons a viewer's WebSocket is refused or closed (the close frame's
// reason).
const (
	ReasonBadUpgrade        Reason = "bad_upgrade"
	ReasonOriginNotAllowed  Reason = "origin_not_allowed"
	ReasonTokenInvalid      Reason = "token_invalid"
	ReasonTokenUnknown      Reason = "token_unknown"
	ReasonTakenOver         Reason = "taken_over"
	ReasonSessionCompleted  Reason = "session_completed"
	ReasonShutdown          Reason = "shutdown"
	ReasonReadyTimeout      Reason = "ready_timeout"
	ReasonAddressNotAllowed Reason = "address_not_allowed"
	ReasonVNCUnreachable    Reason = "vnc_unreachable"
	ReasonNotRFB            Reason = "not_rfb"
	ReasonVNCAuthFailed     Reason = "vnc_auth_failed"
	ReasonMachineGone       Reason = "machine_gone"
	ReasonPingTimeout       Reason = "ping_timeout"
	ReasonBadClient         Reason = "bad_client"
	ReasonClientGone        Reason = "client_gone"
	ReasonMessageTooBig     Reason = "message_too_big"
	ReasonTargetClosed      Reason = "target_closed"
	ReasonTargetError       Reason = "target_error"
)

// Reasons a viewer token is refused.
const (
	ReasonTokenMissing      Reason = "token_missing"
	ReasonTokenMalformed    Reason = "token_malformed"
	ReasonTokenBadSignature Reason = "token_bad_signature"
	ReasonTokenExpired      Reason = "token_expired"
	ReasonTokenWrongSession Reason = "token_wrong_session"
)

// Reasons of the vault's errors.
const (
	ReasonBadVaultKey Reason = "bad_vault_key"
	ReasonNoVaultKeys Reason = "no_vault_keys"
	// ReasonVaultKeyMissing: the store holds records sealed with keys that
	// are not configured, so the controller refuses to start.
	ReasonVaultKeyMissing Reason = "vault_key_missing"
	// ReasonVaultKeysLocal: the vault key was generated into the data
	// directory (logged at start, a warning to back it up).
	ReasonVaultKeysLocal    Reason = "vault_keys_local"
	ReasonVaultOpenFailed   Reason = "vault_open_failed"
	ReasonVaultSealFailed   Reason = "vault_seal_failed"
	ReasonAuditFailed       Reason = "audit_failed"
	ReasonInvalidCredential Reason = "invalid_credential"
	ReasonInvalidRequest    Reason = "invalid_request"
)

// Reasons of the warm pool.
const (
	// ReasonPooled is the reason of the event that makes a session ready
	// on a pooled machine (a pool hit); a cold start has none.
	ReasonPooled       Reason = "pooled"
	ReasonPoolEvicted  Reason = "pool_evicted"  // a pooled machine made room for a cold start
	ReasonPoolOrphaned Reason = "pool_orphaned" // a pooled machine an earlier process left
	ReasonBadPooled    Reason = "bad_pooled"
	ReasonNotPooled    Reason = "not_pooled"
	ReasonPooledExists Reason = "pooled_exists"
)

// Reasons of the webhook notifier's errors.
const (
	ReasonBadWebhookConfig  Reason = "bad_webhook_config"
	ReasonQueueFullOrClosed Reason = "queue_full_or_closed"
	ReasonWebhookRejected   Reason = "webhook_rejected"
	ReasonWebhookGaveUp     Reason = "webhook_gave_up"
	ReasonWebhookDropped    Reason = "webhook_dropped"
)

// Reasons the controller process logs about itself.
const (
	ReasonSignal      Reason = "signal"
	ReasonCloseFailed Reason = "close_failed"
	// ReasonRlimit: the open-file limit could not be read or raised.
	ReasonRlimit Reason = "rlimit"
)

// Reasons of the adapters (API, gateway, stores, drivers, agent).
const (
	ReasonBadBind             Reason = "bad_bind"
	ReasonBadLimits           Reason = "bad_limits"
	ReasonBadUIDBase          Reason = "bad_uid_base"
	ReasonInsecureSharedHost  Reason = "insecure_shared_host"
	ReasonNoCgroups           Reason = "no_cgroups"
	ReasonUnconfinedNeedsFlag Reason = "unconfined_needs_flag"
	ReasonNoUserNamespaces    Reason = "no_user_namespaces"
	ReasonSocketDirNotPrivate Reason = "socket_dir_not_private"
	ReasonEgressUnavailable   Reason = "egress_unavailable"
)
