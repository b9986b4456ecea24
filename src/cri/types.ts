// The CRI v1 messages Ferry's kubelet stand-in sends and reads, as proto-loader presents them (src/cri/api.proto).
//
// Conventions of the loader options in client.ts: field names as in the .proto (snake_case), enums as their
// names, int64 as decimal strings on the way out (nanosecond timestamps exceed 2^53), numbers or strings on
// the way in. Only the fields Ferry uses are declared; the .proto is the full truth.

export type NamespaceMode = 'POD' | 'CONTAINER' | 'NODE' | 'TARGET';
export type PodSandboxState = 'SANDBOX_READY' | 'SANDBOX_NOTREADY';
export type ContainerState = 'CONTAINER_CREATED' | 'CONTAINER_RUNNING' | 'CONTAINER_EXITED' | 'CONTAINER_UNKNOWN';
/** An int64 as sent: a number (exact up to 2^53) or a decimal string. */
export type Int64In = number | string;
export type Labels = Record<string, string>;

export interface KeyValue { key: string; value: string }
export interface NamespaceOption { network?: NamespaceMode; pid?: NamespaceMode; ipc?: NamespaceMode; target_id?: string }
export interface PodSandboxMetadata { name: string; uid: string; namespace: string; attempt: number }
export interface ContainerMetadata { name: string; attempt: number }
export interface ImageSpec { image: string; annotations?: Labels; user_specified_image?: string }

export interface LinuxContainerResources {
  cpu_period?: Int64In; cpu_quota?: Int64In; cpu_shares?: Int64In; memory_limit_in_bytes?: Int64In;
  oom_score_adj?: Int64In; cpuset_cpus?: string; cpuset_mems?: string;
}
export interface SecurityProfile { profile_type: 'RuntimeDefault' | 'Unconfined' | 'Localhost'; localhost_ref?: string }
export interface PortMapping { protocol?: 'TCP' | 'UDP' | 'SCTP'; container_port: number; host_port?: number; host_ip?: string }

export interface PodSandboxConfig {
  metadata: PodSandboxMetadata;
  hostname?: string;
  log_directory?: string;
  port_mappings?: PortMapping[];
  labels?: Labels;
  annotations?: Labels;
  linux?: {
    cgroup_parent?: string;
    security_context?: { namespace_options?: NamespaceOption; privileged?: boolean; seccomp?: SecurityProfile };
    sysctls?: Labels;
    resources?: LinuxContainerResources;
  };
}

export interface ContainerConfig {
  metadata: ContainerMetadata;
  image: ImageSpec;
  command?: string[];
  args?: string[];
  working_dir?: string;
  envs?: KeyValue[];
  labels?: Labels;
  annotations?: Labels;
  log_path?: string;
  stdin?: boolean;
  tty?: boolean;
  linux?: {
    resources?: LinuxContainerResources;
    security_context?: {
      privileged?: boolean;
      namespace_options?: NamespaceOption;
      masked_paths?: string[];
      readonly_paths?: string[];
      seccomp?: SecurityProfile;
    };
  };
}

export interface VersionResponse { version: string; runtime_name: string; runtime_version: string; runtime_api_version: string }

export interface PodSandboxStatus {
  id: string;
  metadata: PodSandboxMetadata | null;
  state: PodSandboxState;
  /** Nanoseconds since the epoch, as a decimal string. */
  created_at: string;
  network: { ip: string } | null;
  labels: Labels;
  annotations: Labels;
  runtime_handler: string;
}
export interface PodSandboxStatusResponse { status: PodSandboxStatus | null; info: Labels }

export interface ContainerStatus {
  id: string;
  metadata: ContainerMetadata | null;
  state: ContainerState;
  created_at: string;
  started_at: string;
  finished_at: string;
  exit_code: number;
  image: ImageSpec | null;
  image_ref: string;
  reason: string;
  message: string;
  labels: Labels;
  annotations: Labels;
  log_path: string;
}
export interface ContainerStatusResponse { status: ContainerStatus | null; info: Labels }

export interface PodSandbox {
  id: string;
  metadata: PodSandboxMetadata | null;
  state: PodSandboxState;
  created_at: string;
  labels: Labels;
  annotations: Labels;
  runtime_handler: string;
}
export interface Container {
  id: string;
  pod_sandbox_id: string;
  metadata: ContainerMetadata | null;
  image: ImageSpec | null;
  image_ref: string;
  state: ContainerState;
  created_at: string;
  labels: Labels;
  annotations: Labels;
}

export interface PodSandboxFilter { id?: string; state?: { state: PodSandboxState }; label_selector?: Labels }
export interface ContainerFilter { id?: string; state?: { state: ContainerState }; pod_sandbox_id?: string; label_selector?: Labels }
