/*
 * Tiny guests for the direct KVM tests. Each is position-independent 64-bit code that the test
 * copies to guest memory and enters through cvisor's own long-mode setup (the same path a Linux
 * 64-bit boot uses); they run a few hundred instructions at most, which even an emulating KVM
 * (PVM) executes in milliseconds. They end by writing S5 to the ACPI PM1a control register,
 * i.e. they power the VM off the way Linux does.
 */
#define PORT_COM1        0x3f8
#define PORT_PM1A_CNT    0x604
#define PM1_S5_ENABLE    0x3400    /* SLP_TYP 5 << 10 | SLP_EN (bit 13) */
#define PORT_TEST        0x510     /* the tests' own device */
#define TEST_MMIO        0xd0000000
#define LAPIC_ICR_LOW    0xfee00300

	.section .rodata
	.code64

.macro POWER_OFF
	mov $PORT_PM1A_CNT, %dx
	mov $PM1_S5_ENABLE, %ax
	out %ax, %dx
1:	hlt
	jmp 1b
.endm

/* Writes a string to the UART, one byte per port write, then powers off. */
	.globl guest_hello_start, guest_hello_end
guest_hello_start:
	lea hello_msg(%rip), %rsi
	mov $PORT_COM1, %dx
1:	lodsb
	test %al, %al
	jz 2f
	out %al, %dx
	jmp 1b
2:	POWER_OFF
hello_msg:
	.asciz "hello from the guest\n"
guest_hello_end:

/*
 * Hello, then wait: prints a line and halts with interrupts off, so the VM stays running until
 * the VMM stops it (control API tests look at a running VM).
 */
	.globl guest_hello_wait_start, guest_hello_wait_end
guest_hello_wait_start:
	lea hello_wait_msg(%rip), %rsi
	mov $PORT_COM1, %dx
1:	lodsb
	test %al, %al
	jz 2f
	out %al, %dx
	jmp 1b
2:	cli
	hlt
	jmp 2b
hello_wait_msg:
	.asciz "hello from an API-configured guest\n"
guest_hello_wait_end:

/* MMIO: writes a 32-bit value, reads one back and stores it where the VMM can see it. */
	.globl guest_mmio_start, guest_mmio_end
guest_mmio_start:
	mov $TEST_MMIO, %rbx
	movl $0xdeadbeef, (%rbx)
	movq $0x1122334455667788, %rax
	movq %rax, 0x10(%rbx)
	movl 8(%rbx), %eax
	movl %eax, 0x200000
	POWER_OFF
guest_mmio_end:

/*
 * Memory: sums the 4096 bytes the VMM placed at 2 MiB + 1 MiB, stores the sum at 2 MiB, and fills
 * 4 KiB at 4 MiB with the pattern i * 0x01010101 for dword i.
 */
	.globl guest_memory_start, guest_memory_end
guest_memory_start:
	mov $0x300000, %rsi
	xor %eax, %eax
	xor %ecx, %ecx
1:	movzbl (%rsi,%rcx), %edx
	add %edx, %eax
	inc %ecx
	cmp $4096, %ecx
	jne 1b
	movl %eax, 0x200000
	mov $0x400000, %rdi
	xor %ecx, %ecx
2:	mov %ecx, %eax
	imul $0x01010101, %eax, %eax
	movl %eax, (%rdi,%rcx,4)
	inc %ecx
	cmp $1024, %ecx
	jne 2b
	POWER_OFF
guest_memory_end:

/*
 * SMP: the boot CPU wakes every other vCPU with INIT and STARTUP IPIs (as Linux does) at the
 * real-mode trampoline the VMM copied to 0x10000, waits until %rsi of them have checked in,
 * then prints "smp ok" and powers off.
 */
	.globl guest_smp_bsp_start, guest_smp_bsp_end
guest_smp_bsp_start:
	mov $LAPIC_ICR_LOW, %rbx
	movl $0x000c4500, (%rbx)          /* INIT, assert, all excluding self */
	mov $2000, %ecx
1:	pause
	loop 1b
	movl $0x000c4610, (%rbx)          /* STARTUP, vector 0x10 -> 0x10000 */
	mov $2000, %ecx
2:	pause
	loop 2b
	movl $0x000c4610, (%rbx)          /* second STARTUP, as the MP spec recommends */
3:	movzbl 0x10100, %eax              /* check-in counter in the trampoline page */
	cmp %esi, %eax
	jb 3b
	lea smp_msg(%rip), %rsi
	mov $PORT_COM1, %dx
4:	lodsb
	test %al, %al
	jz 5f
	out %al, %dx
	jmp 4b
5:	POWER_OFF
smp_msg:
	.asciz "smp ok\n"
guest_smp_bsp_end:

/* Triple fault: #UD with an empty IDT escalates to #GP, #DF, then a CPU shutdown. */
	.globl guest_triple_fault_start, guest_triple_fault_end
guest_triple_fault_start:
	ud2
guest_triple_fault_end:

/* popcnt at CPL0: real VT-x/AMD-V runs it; PVM's instruction emulator cannot. */
	.globl guest_popcnt_start, guest_popcnt_end
guest_popcnt_start:
	mov $0xff, %eax
	popcnt %eax, %ebx
	POWER_OFF
guest_popcnt_end:

	.code16
	.globl guest_smp_ap_start, guest_smp_ap_end
guest_smp_ap_start:
	mov %cs, %ax
	mov %ax, %ds
	mov $1, %al
	lock xaddb %al, 0x100              /* take a ticket: old count */
	inc %al
	mov $PORT_TEST, %dx
	out %al, %dx                       /* tell the VMM's test device which ticket we hold */
	cli
6:	hlt
	jmp 6b
guest_smp_ap_end:
	.code64

	.section .note.GNU-stack, "", @progbits
