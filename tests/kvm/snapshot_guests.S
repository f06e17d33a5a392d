/*
 * Tiny guest for the snapshot tests (test_snapshot.c): counts in memory until the host sets a
 * stop word, then powers off. Its state lives in registers (the counter's address in %rdi, the
 * loop's rip) and in RAM, so it only goes on counting after a restore if both came back.
 */
#define PORT_PM1A_CNT    0x604
#define PM1_S5_ENABLE    0x3400    /* SLP_TYP 5 << 10 | SLP_EN (bit 13) */
#define COUNTER_GPA      0x200000  /* u64 counter; u64 stop word at +8 */

	.section .rodata
	.code64

	.globl guest_counter_start, guest_counter_end
guest_counter_start:
	mov $COUNTER_GPA, %rdi
1:	incq (%rdi)
	pause
	cmpq $0, 8(%rdi)
	je 1b
	mov $PORT_PM1A_CNT, %dx
	mov $PM1_S5_ENABLE, %ax
	out %ax, %dx
2:	hlt
	jmp 2b
guest_counter_end:

/*
 * Ticker: counts like the counter guest and writes '.' to COM1 every 2^16 counts, so a process
 * restored from a snapshot shows it runs (its console file grows) while it keeps its RAM to
 * itself. Never stops on its own.
 */
	.globl guest_ticker_start, guest_ticker_end
guest_ticker_start:
	mov $COUNTER_GPA, %rdi
1:	incq (%rdi)
	testl $0xffff, (%rdi)
	jnz 1b
	mov $0x3f8, %dx
	mov $'.', %al
	out %al, %dx
	jmp 1b
guest_ticker_end:

	.section .note.GNU-stack, "", @progbits
