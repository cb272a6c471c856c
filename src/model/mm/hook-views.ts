/**
 * The read-only views a memory type is shown instead of the core's live
 * `Vma` and `Inode` objects. A view reads through to its object (so it is
 * never stale) and has no way to reach it: the object sits in a private
 * field, views and their prototypes are frozen, and a view has no setter
 * but the inode's `typeState`, which is the type's own. The core maps a
 * view handed back to its services to the inode with `inodeOfView`; an
 * object it did not make maps to null.
 */
import type { Inode } from '../mem/pagecache.ts';
import type { InodeView, VmaView } from './memtype.ts';
import type { Vma } from './vma.ts';

class InodeViewObject implements InodeView {
  readonly #inode: Inode;

  constructor(inode: Inode) {
    this.#inode = inode;
    Object.freeze(this);
  }

  get id(): number {
    return this.#inode.id;
  }

  get name(): string {
    return this.#inode.name;
  }

  get pageShift(): number {
    return this.#inode.pageShift;
  }

  get sizeBytes(): number {
    return this.#inode.sizeBytes;
  }

  get pageSize(): number {
    return this.#inode.pageSize;
  }

  get pagesPerFolio(): number {
    return this.#inode.pagesPerFolio;
  }

  get typeState(): unknown {
    return this.#inode.typeState;
  }

  set typeState(state: unknown) {
    this.#inode.typeState = state;
  }

  /** A brand check: no getter or Proxy trap of `view` runs. */
  static inodeOf(view: unknown): Inode | null {
    return typeof view === 'object' && view !== null && #inode in view
      ? (view as InodeViewObject).#inode
      : null;
  }
}
Object.freeze(InodeViewObject.prototype);
Object.freeze(InodeViewObject);

class VmaViewObject implements VmaView {
  readonly #vma: Vma;
  readonly #views: HookViews;

  constructor(vma: Vma, views: HookViews) {
    this.#vma = vma;
    this.#views = views;
    Object.freeze(this);
  }

  get start(): number {
    return this.#vma.start;
  }

  get end(): number {
    return this.#vma.end;
  }

  get flags(): number {
    return this.#vma.flags;
  }

  get pgoff(): number {
    return this.#vma.pgoff;
  }

  get pageShift(): number {
    return this.#vma.pageShift;
  }

  get inode(): InodeView | null {
    const inode = this.#vma.inode;
    return inode === null ? null : this.#views.inode(inode);
  }
}
Object.freeze(VmaViewObject.prototype);
Object.freeze(VmaViewObject);

/** The views one kernel has shown its memory types: one per inode and one per VMA, made when first shown. */
export class HookViews {
  private readonly inodeViews = new WeakMap<Inode, InodeView>();
  private readonly vmaViews = new WeakMap<Vma, VmaView>();

  /** The view of `inode` memory types are shown. */
  inode(inode: Inode): InodeView {
    let view = this.inodeViews.get(inode);
    if (view === undefined) {
      view = new InodeViewObject(inode);
      this.inodeViews.set(inode, view);
    }
    return view;
  }

  /** The view of `vma` memory types are shown. */
  vma(vma: Vma): VmaView {
    let view = this.vmaViews.get(vma);
    if (view === undefined) {
      view = new VmaViewObject(vma, this);
      this.vmaViews.set(vma, view);
    }
    return view;
  }
}

/** The inode behind a view the core made, or null for any other value. */
export function inodeOfView(view: unknown): Inode | null {
  return InodeViewObject.inodeOf(view);
}
