// A CRI v1 RuntimeService client over containerd's unix socket: the calls kubelet makes, typed, cancellable.

import { join } from 'node:path';
import { Client, credentials, Metadata, type ServiceError } from '@grpc/grpc-js';
import { loadSync, type MethodDefinition, type PackageDefinition } from '@grpc/proto-loader';
import { FerryError } from '../protocol/errors.js';
import { criError } from './errors.js';
import { packageRoot } from '../util/package-root.js';
import type {
  Container, ContainerConfig, ContainerFilter, ContainerStatusResponse, PodSandbox, PodSandboxConfig, PodSandboxFilter,
  PodSandboxStatusResponse, VersionResponse,
} from './types.js';

/** kubelet's `--runtime-request-timeout` default: the deadline of every call but StopContainer's. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 120_000;
const SERVICE = 'runtime.v1.RuntimeService';

/** Path of the vendored CRI api.proto (always read from src/, which every checkout has). */
export const CRI_PROTO = join(packageRoot(), 'src/cri/api.proto');

let definition: PackageDefinition | undefined;
function service(): Record<string, MethodDefinition<object, object>> {
  definition ??= loadSync(CRI_PROTO, { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
  const s = definition[SERVICE];
  if (!s || 'format' in s) throw new FerryError('E_INTERNAL', `${CRI_PROTO} has no service ${SERVICE}`);
  return s as Record<string, MethodDefinition<object, object>>;
}

export interface CriClientOptions {
  /** Per-call deadline; StopContainer adds its own timeout on top, as kubelet does. */
  requestTimeoutMs?: number;
}

/** A CRI RuntimeService client for one containerd. Every method rejects with a FerryError (src/cri/errors.ts). */
export class CriClient {
  readonly address: string;
  private readonly client: Client;
  private readonly methods = service();
  private readonly timeoutMs: number;

  /** `socket` is a path (`/run/ferry/h/cri/containerd.sock`) or a `unix://` address. */
  constructor(socket: string, o: CriClientOptions = {}) {
    this.address = socket.startsWith('unix:') ? socket : `unix://${socket}`;
    this.timeoutMs = o.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    // Messages up to 16 MiB, as kubelet allows (ListContainers on a busy node).
    this.client = new Client(this.address, credentials.createInsecure(), {
      'grpc.max_receive_message_length': 16 << 20,
      'grpc.max_send_message_length': 16 << 20,
    });
  }

  version(signal?: AbortSignal): Promise<VersionResponse> {
    return this.call('Version', { version: 'v1' }, signal);
  }

  /** Creates and starts the sandbox; resolves with its id once it is ready. */
  async runPodSandbox(config: PodSandboxConfig, runtimeHandler: string, signal?: AbortSignal): Promise<string> {
    const r = await this.call<{ pod_sandbox_id: string }>('RunPodSandbox', { config, runtime_handler: runtimeHandler }, signal);
    return r.pod_sandbox_id;
  }

  async stopPodSandbox(podId: string, signal?: AbortSignal): Promise<void> {
    await this.call('StopPodSandbox', { pod_sandbox_id: podId }, signal);
  }

  async removePodSandbox(podId: string, signal?: AbortSignal): Promise<void> {
    await this.call('RemovePodSandbox', { pod_sandbox_id: podId }, signal);
  }

  podSandboxStatus(podId: string, signal?: AbortSignal): Promise<PodSandboxStatusResponse> {
    return this.call('PodSandboxStatus', { pod_sandbox_id: podId, verbose: false }, signal);
  }

  async listPodSandbox(filter: PodSandboxFilter = {}, signal?: AbortSignal): Promise<PodSandbox[]> {
    return (await this.call<{ items: PodSandbox[] }>('ListPodSandbox', { filter }, signal)).items;
  }

  /** Creates a container in sandbox `podId`; `sandboxConfig` is the config the sandbox was run with. */
  async createContainer(podId: string, config: ContainerConfig, sandboxConfig: PodSandboxConfig, signal?: AbortSignal): Promise<string> {
    const r = await this.call<{ container_id: string }>('CreateContainer', { pod_sandbox_id: podId, config, sandbox_config: sandboxConfig }, signal);
    return r.container_id;
  }

  async startContainer(id: string, signal?: AbortSignal): Promise<void> {
    await this.call('StartContainer', { container_id: id }, signal);
  }

  /** SIGTERM (or the image's stop signal), SIGKILL after `timeoutSec`; the deadline is the request timeout plus that. */
  async stopContainer(id: string, timeoutSec: number, signal?: AbortSignal): Promise<void> {
    await this.call('StopContainer', { container_id: id, timeout: timeoutSec }, signal, this.timeoutMs + timeoutSec * 1000);
  }

  async removeContainer(id: string, signal?: AbortSignal): Promise<void> {
    await this.call('RemoveContainer', { container_id: id }, signal);
  }

  containerStatus(id: string, signal?: AbortSignal): Promise<ContainerStatusResponse> {
    return this.call('ContainerStatus', { container_id: id, verbose: false }, signal);
  }

  async listContainers(filter: ContainerFilter = {}, signal?: AbortSignal): Promise<Container[]> {
    return (await this.call<{ containers: Container[] }>('ListContainers', { filter }, signal)).containers;
  }

  close(): void {
    this.client.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /** One unary call with a deadline; an abort cancels it on the wire (containerd sees the context cancelled). */
  private call<R>(method: string, request: object, signal: AbortSignal | undefined, timeoutMs = this.timeoutMs): Promise<R> {
    const m = this.methods[method];
    if (!m) return Promise.reject(new FerryError('E_INTERNAL', `CRI has no method ${method}`));
    if (signal?.aborted) return Promise.reject(new FerryError('E_ABORTED', `CRI ${method} aborted before it was sent`, { cause: signal.reason }));
    return new Promise<R>((resolve, reject) => {
      const done = (e: ServiceError | null, r?: object): void => {
        signal?.removeEventListener('abort', onAbort);
        if (e) reject(criError(method, e, { aborted: !!signal?.aborted, cause: e }));
        else resolve(r as R);
      };
      const call = this.client.makeUnaryRequest<object, object>(
        m.path, m.requestSerialize, m.responseDeserialize, request, new Metadata(), { deadline: Date.now() + timeoutMs }, done,
      );
      const onAbort = (): void => call.cancel();
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}
