#!/usr/bin/env node
import '../dist/src/controller/main.js';
