/**
 * Numbers of bpf/podmeter.h that user space needs, kept in step with it
 * (test/kernel/peer-classes.test.ts fails when they drift). No native code
 * here: configuration parsing imports it.
 */

/** PODMETER_SLOTS: counter slots per storage value, a slot per peer class. */
export const PODMETER_SLOTS = 15;
/** PODMETER_FIRST_NAMED: the first slot of the configured named classes. */
export const PODMETER_FIRST_NAMED = 7;
/** PODMETER_NAME_LEN: a class name and its NUL. */
export const PODMETER_NAME_LEN = 64;
/** PODMETER_GENERATION_MASK: the peer trie generation bits the programs compare. */
export const PODMETER_GENERATION_MASK = 0x0fffffff;
