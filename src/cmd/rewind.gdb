# gdb commands for Rewind (rewind gdbinit > rewind.gdb; source rewind.gdb)
# Each also flushes gdb's register and memory caches: gdb cannot know that a monitor command
# moved the target.
define rewind-flush
  maintenance flush register-cache
  maintenance flush dcache
end
define icount
  monitor icount
  rewind-flush
end
document icount
Print the current instruction count of the recording.
end
define when
  monitor icount
  rewind-flush
end
document when
Print the current instruction count of the recording (as rr's `when`).
end
define seek
  eval "monitor seek %lu", (unsigned long)($arg0)
  rewind-flush
end
document seek
Move to instruction N of the recording: seek N
end
define last-write
  if $argc == 1
    eval "monitor last-write %lu", (unsigned long)($arg0)
  else
    eval "monitor last-write %lu %lu", (unsigned long)($arg0), (unsigned long)($arg1)
  end
  rewind-flush
end
document last-write
When memory at ADDR (LEN bytes, default 8) was last written before now: last-write ADDR [LEN]
Prints the instruction count of the store and its pc, and with several harts the hart.
end
