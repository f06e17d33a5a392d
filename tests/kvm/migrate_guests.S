/*
 * Tiny guest for the live-migration tests (test_migrate.c): sweeps a 4 MiB region page by page
 * as fast as it can, storing in each page the sweep number k (word 0) and k xor the page's
 * address (word 1), then records k as the last complete sweep. It dirties every page of the
 * region continuously, so migration must resend pages in every round. Whenever the guest is
 * paused, the region reads: a prefix of pages with k+1, the rest with k (k = the control
 * word); a page the migration lost would hold an older sweep and break that. The sweep number
 * lives in %rax, so the guest only continues correctly if its registers moved too. It powers
 * off once the host sets the stop word.
 */
#define PORT_PM1A_CNT    0x604
#define PM1_S5_ENABLE    0x3400
#define CTRL_GPA         0x200000  /* u64 last complete sweep; u64 stop word at +8 */
#define DATA_GPA         0x400000
#define DATA_PAGES       1024

	.section .rodata
	.code64

	.globl guest_sweeper_start, guest_sweeper_end
guest_sweeper_start:
	mov $CTRL_GPA, %rdi
	xor %eax, %eax
1:	inc %rax
	mov $DATA_GPA, %rsi
	mov $DATA_PAGES, %ecx
2:	mov %rax, (%rsi)
	mov %rax, %rdx
	xor %rsi, %rdx
	mov %rdx, 8(%rsi)
	add $4096, %rsi
	dec %ecx
	jnz 2b
	mov %rax, (%rdi)
	cmpq $0, 8(%rdi)
	je 1b
	mov $PORT_PM1A_CNT, %dx
	mov $PM1_S5_ENABLE, %ax
	out %ax, %dx
3:	hlt
	jmp 3b
guest_sweeper_end:

	.section .note.GNU-stack, "", @progbits
