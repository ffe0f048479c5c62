package snat

// The objects are committed so that building the agent needs no clang;
// CI runs go generate again and checks that nothing changed.
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel -cflags "-O2 -g -Wall -Werror -I../include -I/usr/include" snat snat.c
