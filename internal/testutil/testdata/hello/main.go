// Command hello prints hello: a main package for TestBuildBinary.
package main

import "fmt"

func main() { fmt.Println("hello") }
