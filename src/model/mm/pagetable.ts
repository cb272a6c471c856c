/**
 * Page-table entries. One entry per 4 KiB virtual page, in a SparseArray
 * keyed by virtual page number; a huge mapping fills every entry it covers
 * (pfn = head + i) and takes one reference and one mapcount for the whole
 * folio, released at the head entry.
 */

/** Maps a frame (with PTE_ZERO: the shared zero page). */
export const PTE_PRESENT = 1 << 0;
export const PTE_WRITE = 1 << 1;
export const PTE_DIRTY = 1 << 2;
/** The uffd-wp bit of a present entry. */
export const PTE_UFFD_WP = 1 << 3;
/** A present entry mapping the shared zero page (pte_special). */
export const PTE_ZERO = 1 << 4;
/** PTE_MARKER_UFFD_WP: not present, write-protected by userfaultfd. */
export const PTE_MARKER_UFFD_WP = 1 << 5;
/** PTE_MARKER_POISONED: not present, any access raises SIGBUS. */
export const PTE_MARKER_POISONED = 1 << 6;

/**
 * A present entry of a VMA that allows no access (PROT_NONE, x86's
 * _PAGE_PROTNONE): pagemap sees it present, but any access faults and the
 * fault path gives SIGSEGV (SEGV_ACCERR) [OBS 6.18: uapi-facts §5.5].
 */
export const PTE_PROTNONE = 1 << 7;

export const PTE_MARKER_MASK = PTE_MARKER_UFFD_WP | PTE_MARKER_POISONED;
