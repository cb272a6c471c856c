/**
 * `faultline/memtype`: what an outside memory type module is written against
 * (`faultline conformance --module` loads one) — the `MemoryType` descriptor
 * and its `vm_uffd_ops`, the services the model kernel lends a type, the
 * fault results, and the page-cache helpers the built-in file types compose.
 *
 * @packageDocumentation
 */
export {
  type ConformanceSyscalls,
  type DeviceDriver,
  type DeviceFile,
  type DeviceIoctlResult,
  FAULT_ALLOC_PRIVATE,
  FAULT_OOM,
  FAULT_SIGBUS,
  type FileOps,
  type InodeRequest,
  type InodeView,
  type MemoryType,
  type MemoryTypeModule,
  type MemoryTypeServices,
  type MmapRequest,
  type Provision,
  type VmaView,
  type VmUffdOps,
} from '../mm/memtype.ts';
export { MemoryTypeError, validateMemoryType } from '../mm/registry.ts';
export { type FilemapPolicy, filemapFault, filemapGetForWrite, filemapUffdOps } from './filemap.ts';
