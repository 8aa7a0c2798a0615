#!/usr/bin/env node
// dist/cli.js is oclif's `execute`, bundled with @oclif/core by `npm run build` (scripts/build.mjs).
import {execute} from '../dist/cli.js'

await execute({dir: import.meta.url})
