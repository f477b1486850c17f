/* Reset and exception vectors for the bare-metal Cortex-M boards (QEMU
 * mps3-an547, STM32N6). Written in assembly on purpose: with
 * -mcpu=cortex-m55 the compiler may use FPU/MVE instructions in any C
 * function (even a copy loop), and those fault until CP10/CP11 are enabled
 * in CPACR, so that happens here before any compiled code runs.
 *
 * Symbols from the board's linker script: __stack_top, __stack_limit,
 * __data_load, __data_start, __data_end, __bss_start, __bss_end.
 */
    .syntax unified
    .thumb

    .section .isr_vector, "a", %progbits
    .balign 128
    .global g_hil_vectors
    .type g_hil_vectors, %object
g_hil_vectors:
    .word __stack_top
    .word Reset_Handler
    .word NMI_Handler
    .word HardFault_Handler
    .word MemManage_Handler
    .word BusFault_Handler
    .word UsageFault_Handler
    .word SecureFault_Handler
    .word 0
    .word 0
    .word 0
    .word SVC_Handler
    .word DebugMon_Handler
    .word 0
    .word PendSV_Handler
    .word SysTick_Handler
    .size g_hil_vectors, . - g_hil_vectors

    .text
    .balign 4
    .global Reset_Handler
    .type Reset_Handler, %function
    .thumb_func
Reset_Handler:
    ldr   r0, =__stack_top
    msr   msp, r0
    ldr   r0, =__stack_limit
    msr   msplim, r0
    /* VTOR: a debugger's development boot may jump here with another table. */
    ldr   r0, =0xE000ED08
    ldr   r1, =g_hil_vectors
    str   r1, [r0]
    /* CPACR: full access to CP10/CP11 (FPU and MVE). */
    ldr   r0, =0xE000ED88
    ldr   r1, [r0]
    orr   r1, r1, #(0xF << 20)
    str   r1, [r0]
    dsb
    isb
    /* .data from its load address. */
    ldr   r0, =__data_load
    ldr   r1, =__data_start
    ldr   r2, =__data_end
1:  cmp   r1, r2
    bhs   2f
    ldr   r3, [r0], #4
    str   r3, [r1], #4
    b     1b
    /* .bss to zero. */
2:  ldr   r1, =__bss_start
    ldr   r2, =__bss_end
    movs  r3, #0
3:  cmp   r1, r2
    bhs   4f
    str   r3, [r1], #4
    b     3b
4:  bl    HilBoardEarlyInit
    bl    __libc_init_array
    bl    main
    bl    exit
5:  b     5b
    .size Reset_Handler, . - Reset_Handler
    .ltorg

/* Weak defaults: a fault ends the program through the board's fault hook
 * (QEMU exits with a code; real boards stay put for the debugger). */
    .balign 4
    .weak HilBoardEarlyInit
    .type HilBoardEarlyInit, %function
    .thumb_func
HilBoardEarlyInit:
    bx    lr
    .size HilBoardEarlyInit, . - HilBoardEarlyInit

    .balign 4
    .type Hil_Fault_Handler, %function
    .thumb_func
Hil_Fault_Handler:
    mrs   r0, ipsr
    b     HilBoardFault
    .size Hil_Fault_Handler, . - Hil_Fault_Handler

    .balign 4
    .weak HilBoardFault
    .type HilBoardFault, %function
    .thumb_func
HilBoardFault:
    b     HilBoardFault
    .size HilBoardFault, . - HilBoardFault

    .macro weak_handler name
    .weak \name
    .thumb_set \name, Hil_Fault_Handler
    .endm

    weak_handler NMI_Handler
    weak_handler HardFault_Handler
    weak_handler MemManage_Handler
    weak_handler BusFault_Handler
    weak_handler UsageFault_Handler
    weak_handler SecureFault_Handler
    weak_handler SVC_Handler
    weak_handler DebugMon_Handler
    weak_handler PendSV_Handler
    weak_handler SysTick_Handler
