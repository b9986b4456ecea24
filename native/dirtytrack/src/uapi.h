/*
 * Kernel UAPI definitions that Debian bookworm's headers (linux 6.1) lack.
 * Values are from the upstream uapi headers (linux >= 6.7); they are part of
 * the stable kernel ABI. Every definition is guarded so that newer headers win.
 */
#ifndef FERRY_DT_UAPI_H
#define FERRY_DT_UAPI_H

#include <stdint.h>
#include <linux/ioctl.h>
#include <linux/userfaultfd.h>

/* userfaultfd (linux/userfaultfd.h) */
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif

/* PAGEMAP_SCAN (linux/fs.h, 6.7+). Declared under our own names so that a
 * newer system header defining the same struct cannot clash. */
struct dt_page_region {
	uint64_t start;
	uint64_t end; /* exclusive */
	uint64_t categories;
};

struct dt_pm_scan_arg {
	uint64_t size;
	uint64_t flags;
	uint64_t start;
	uint64_t end;
	uint64_t walk_end;
	uint64_t vec;
	uint64_t vec_len;
	uint64_t max_pages;
	uint64_t category_inverted;
	uint64_t category_mask;
	uint64_t category_anyof_mask;
	uint64_t return_mask;
};

#define DT_PAGEMAP_SCAN _IOWR('f', 16, struct dt_pm_scan_arg)

#define DT_PAGE_IS_WPALLOWED (1ULL << 0)
#define DT_PAGE_IS_WRITTEN (1ULL << 1)
#define DT_PAGE_IS_FILE (1ULL << 2)
#define DT_PAGE_IS_PRESENT (1ULL << 3)
#define DT_PAGE_IS_SWAPPED (1ULL << 4)
#define DT_PAGE_IS_PFNZERO (1ULL << 5)
#define DT_PAGE_IS_HUGE (1ULL << 6)

#define DT_PM_SCAN_WP_MATCHING (1ULL << 0)
#define DT_PM_SCAN_CHECK_WPASYNC (1ULL << 1)

/* ptrace (linux/ptrace.h) */
#ifndef PTRACE_GET_RSEQ_CONFIGURATION
#define PTRACE_GET_RSEQ_CONFIGURATION 0x420f
#endif
struct dt_ptrace_rseq_configuration {
	uint64_t rseq_abi_pointer;
	uint32_t rseq_abi_size;
	uint32_t signature;
	uint32_t flags;
	uint32_t pad;
};
#ifndef PTRACE_O_SUSPEND_SECCOMP
#define PTRACE_O_SUSPEND_SECCOMP (1 << 21)
#endif

/* pidfd (linux/pidfd.h) */
#ifndef PIDFD_THREAD
#define PIDFD_THREAD 0x80 /* == O_EXCL, linux 6.9+ */
#endif

/* syscall numbers, x86_64 */
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif
#ifndef SYS_kcmp
#define SYS_kcmp 312
#endif
#ifndef KCMP_VM
#define KCMP_VM 1
#endif

#define DT_NR_userfaultfd_x86_64 323
#define DT_NR_close_x86_64 3

#endif
