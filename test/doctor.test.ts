// `faultline doctor` on machines that lack a piece (issue 17): each missing piece is named with what
// was found, what needs it, and the exact fix, and the command exits 1. The machine is a probe record
// (src/host/doctor.ts DoctorProbe) that pretends; every other piece is present in it.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { doctorCommand } from '../src/cli/doctor.ts';
import { type DoctorProbe, doctorChecks } from '../src/host/doctor.ts';

const EPERM = 1;

/** A machine with everything, as a non-root user `ada`, with `changes` applied. */
function machine(changes: Partial<DoctorProbe> & { missingPaths?: string[] } = {}): DoctorProbe {
  const missing = new Set(changes.missingPaths ?? []);
  return {
    addon: { userfaultfd: () => 7, close: () => 0 },
    addonLoadError: null,
    addonPath: '/pkg/build/Release/faultline_host.node',
    agentPath: '/pkg/build/Release/faultline_agent',
    checkout: true,
    exists: (path) => !missing.has(path),
    openReadWrite: () => {},
    sysctl: () => '0',
    hugePagePool: () => ({ total: 32, free: 32 }),
    isRoot: () => false,
    kvmUnavailable: () => undefined,
    user: 'ada',
    ...changes,
  };
}

/** What `faultline doctor` prints on `probe`, and its exit code. */
function doctor(probe: DoctorProbe): { code: number; lines: string[] } {
  const lines: string[] = [];
  const code = doctorCommand({ json: false }, (line) => lines.push(line), doctorChecks(probe));
  return { code, lines };
}

/** The lines doctor prints for the one missing check named `name`. */
function missingLines(probe: DoctorProbe, name: string, missing = 1): string[] {
  const { code, lines } = doctor(probe);
  assert.equal(code, 1, 'a missing piece: exit 1');
  const at = lines.findIndex((line) => line.startsWith(`MISSING ${name}: `));
  assert.ok(at >= 0, lines.join('\n'));
  assert.equal(lines.at(-1), `${missing} missing`);
  return lines.slice(at, at + 3);
}

describe('faultline doctor on a machine missing a piece', () => {
  it('everything present: every line ok, exit 0', () => {
    const { code, lines } = doctor(machine());
    assert.equal(code, 0);
    assert.ok(
      lines.slice(0, -1).every((line) => line.startsWith('ok ')),
      lines.join('\n'),
    );
    assert.equal(lines.at(-1), 'everything the host backend uses is here');
  });

  it('the addon did not load: the build command (a checkout) or the rebuild (an install)', () => {
    const gone = { addon: null, addonLoadError: 'Cannot find module faultline_host.node' };
    // Without the addon userfaultfd(2) cannot be probed either: two missing.
    const lines = missingLines(machine(gone), 'native addon', 2);
    assert.deepEqual(lines, [
      'MISSING native addon: Cannot find module faultline_host.node',
      '        needed by: every --backend host run',
      '        fix: apt-get install python3 make g++ && npm run build:native',
    ]);
    const installed = doctorChecks(machine({ ...gone, checkout: false }))[0]!;
    assert.equal(installed.fix, 'apt-get install python3 make g++ && npm rebuild faultline');
    const syscall = doctorChecks(machine(gone))[1]!;
    assert.equal(syscall.ok, false);
    assert.equal(syscall.detail, 'not probed without the addon; vm.unprivileged_userfaultfd = 0');
  });

  it('the agent executable is missing', () => {
    const lines = missingLines(
      machine({ missingPaths: ['/pkg/build/Release/faultline_agent'] }),
      'native addon',
    );
    assert.deepEqual(lines, [
      'MISSING native addon: /pkg/build/Release/faultline_agent is missing',
      '        needed by: host scenarios (their agent process)',
      '        fix: apt-get install python3 make g++ && npm run build:native',
    ]);
  });

  it('userfaultfd(2) gives EPERM (not root, vm.unprivileged_userfaultfd = 0)', () => {
    const lines = missingLines(
      machine({ addon: { userfaultfd: () => -EPERM, close: () => 0 } }),
      'userfaultfd(2)',
    );
    assert.deepEqual(lines, [
      'MISSING userfaultfd(2): gives EPERM; vm.unprivileged_userfaultfd = 0',
      '        needed by: userfaultfd opened through the syscall (the fallback when /dev/userfaultfd is not usable)',
      '        fix: sysctl -w vm.unprivileged_userfaultfd=1 (as root), or run faultline as root (CAP_SYS_PTRACE)',
    ]);
  });

  it('/dev/userfaultfd absent, and present without access', () => {
    assert.deepEqual(missingLines(machine({ missingPaths: ['/dev/userfaultfd'] }), '/dev/userfaultfd'), [
      'MISSING /dev/userfaultfd: absent (Linux 6.1+ built with CONFIG_USERFAULTFD has it)',
      '        needed by: userfaultfd through /dev/userfaultfd (preferred: kernel faults too, without root)',
      '        fix: use a Linux 6.1 or newer kernel; until then the syscall serves',
    ]);
    const denied = machine({
      openReadWrite: () => {
        throw Object.assign(new Error('EACCES: permission denied'), { code: 'EACCES' });
      },
    });
    assert.deepEqual(missingLines(denied, '/dev/userfaultfd'), [
      'MISSING /dev/userfaultfd: cannot be opened (EACCES)',
      '        needed by: userfaultfd through /dev/userfaultfd (preferred: kernel faults too, without root)',
      '        fix: setfacl -m u:ada:rw /dev/userfaultfd (as root; a udev rule keeps it across boots)',
    ]);
  });

  it('no free huge page and no overcommit, not root; no hugetlb pool at all', () => {
    assert.deepEqual(
      missingLines(machine({ hugePagePool: () => ({ total: 0, free: 0 }) }), 'huge pages (2 MiB)'),
      [
        'MISSING huge pages (2 MiB): 0 free of 0, nr_overcommit_hugepages 0',
        '        needed by: hugetlb scenarios and --mode hugetlb workloads on the host',
        '        fix: sysctl -w vm.nr_hugepages=32 (as root)',
      ],
    );
    // As root faultline raises the overcommit itself for a run: nothing is missing.
    const root = doctorChecks(
      machine({ hugePagePool: () => ({ total: 0, free: 0 }), isRoot: () => true }),
    )[3]!;
    assert.equal(root.ok, true);
    const none = doctorChecks(machine({ hugePagePool: () => undefined }))[3]!;
    assert.equal(none.ok, false);
    assert.equal(none.fix, 'a kernel built with CONFIG_HUGETLBFS');
  });

  it('KVM: no /dev/kvm, or no access to it', () => {
    const noDevice = machine({ missingPaths: ['/dev/kvm'], kvmUnavailable: () => '/dev/kvm: no such file' });
    assert.deepEqual(missingLines(noDevice, 'KVM guest_memfd'), [
      'MISSING KVM guest_memfd: /dev/kvm: no such file',
      '        needed by: guest_memfd scenarios and --mode gmem-* workloads on the host',
      '        fix: modprobe kvm_intel (or kvm_amd) as root; in a VM, enable nested virtualization',
    ]);
    const denied = machine({ kvmUnavailable: () => '/dev/kvm: permission denied (EACCES)' });
    assert.equal(
      missingLines(denied, 'KVM guest_memfd')[2],
      '        fix: usermod -aG kvm ada (as root; log in again), on a kernel with guest_memfd (6.8+)',
    );
  });

  it('--json: the same checks, each missing one with its fix, and the count', () => {
    const lines: string[] = [];
    const probe = machine({ missingPaths: ['/dev/userfaultfd'], hugePagePool: () => undefined });
    const code = doctorCommand({ json: true }, (line) => lines.push(line), doctorChecks(probe));
    assert.equal(code, 1);
    const report = JSON.parse(lines.join('\n')) as {
      checks: { name: string; ok: boolean; fix?: string }[];
      missing: number;
    };
    assert.equal(report.missing, 2);
    assert.deepEqual(
      report.checks.filter((check) => !check.ok).map((check) => [check.name, check.fix]),
      [
        ['/dev/userfaultfd', 'use a Linux 6.1 or newer kernel; until then the syscall serves'],
        ['huge pages (2 MiB)', 'a kernel built with CONFIG_HUGETLBFS'],
      ],
    );
  });
});
