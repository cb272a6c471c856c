#!/bin/sh
# Build and run all faultline uffd probes (root, Linux 6.18). Output -> results.txt.
# Temporarily sets /proc/sys/vm/nr_hugepages (0 for q7, 16 for hugetlb probes) and restores it.
set -u
cd "$(dirname "$0")"
OUT=${OUT:-/tmp/faultline-probes}
mkdir -p "$OUT"
ORIG=$(cat /proc/sys/vm/nr_hugepages)
trap 'echo "$ORIG" > /proc/sys/vm/nr_hugepages' EXIT INT TERM
for f in q*.c; do
	gcc -O1 -Wall -o "$OUT/${f%.c}" "$f" -lpthread || exit 1
done
{
	echo "# $(uname -r) $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo 0 > /proc/sys/vm/nr_hugepages
	timeout 30 "$OUT/q7_errno"
	echo 16 > /proc/sys/vm/nr_hugepages
	for p in q1_merge q2_shmem_private q3_hugetlb q4_copy_src_hole q5_wp_markers q6_hugetlb_continue \
		 q8_zeropage_dontwake q9_shared_anon_minor q10_read_count; do
		timeout 30 "$OUT/$p" || echo "!! $p exited $?"
	done
} 2>&1 | tee results.txt
