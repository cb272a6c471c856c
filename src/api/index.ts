/**
 * The package's main entry (`import … from 'faultline'`): the process API
 * over either backend (the model, or the host kernel through the native
 * addon), the userfaultfd handle, errors, and the user ABI (constants, errno,
 * `uffd_msg` and ioctl struct types).
 *
 * @packageDocumentation
 */
export { hostUnavailable } from '../host/capabilities.ts';
export { HostBackend, type HostBackendOptions } from '../host/host-backend.ts';
export * from '../uapi/index.ts';
export {
  type KernelBackend,
  type PageInfo,
  type ProcessBackend,
  type ThreadBackend,
  type ThreadResult,
  type ThreadState,
  type VmaInfo,
  WouldBlockError,
} from './backend.ts';
export { ModelBackend, type ModelBackendOptions } from './model-backend.ts';
export {
  type Address,
  type ApiResult,
  addressNumber,
  alignDown,
  type FillModes,
  featureMask,
  type MapOptions,
  MissingFeaturesError,
  type MoveModes,
  type OpenUffdOptions,
  Process,
  type RangeArgs,
  type RegisterModes,
  type ThreadAccess,
  Uffd,
  type UffdOptions,
  type WriteprotectModes,
} from './process.ts';
