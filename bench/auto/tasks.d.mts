// Types of tasks.mjs, for bench/auto.ts (the module itself stays plain JavaScript for the workers).
export declare function wait(ms: number): Promise<number>;
export declare function spin(iterations: number): number;
