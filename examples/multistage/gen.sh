#!/bin/sh
# prints a small report; run in the build stage only
echo "artifact made by stage 'build'"
echo "sum of 1..10 = $(seq 1 10 | awk '{s+=$1} END {print s}')"
