package mc_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestNoReasonLiterals keeps one spelling of each reason code and of the
// error log key: outside reason.go, a reason is a constant (never a string
// literal in mc.Errorf, a Reason field or after the "reason" log key), and
// an error is logged under mc.LogError, never a literal "err" or "error".
func TestNoReasonLiterals(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "-f", `{{.Dir}}{{range .GoFiles}} {{.}}{{end}}`, "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	root, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		for _, name := range f[1:] {
			path := filepath.Join(f[0], name)
			if f[0] == root && name == "reason.go" {
				continue // the one place where the codes are spelled
			}
			file, err := parser.ParseFile(fset, path, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			ast.Inspect(file, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.CallExpr:
					if isCall(n.Fun, "Errorf") && len(n.Args) > 1 && isString(n.Args[1]) {
						t.Errorf("%s: a reason literal in Errorf: use a constant of reason.go", fset.Position(n.Args[1].Pos()))
					}
					for i, a := range n.Args {
						if isIdent(a, "LogReason") && i+1 < len(n.Args) && isString(n.Args[i+1]) {
							t.Errorf("%s: a reason literal after LogReason: use a constant of reason.go", fset.Position(n.Args[i+1].Pos()))
						}
						if lit, ok := a.(*ast.BasicLit); ok && (lit.Value == `"err"` || lit.Value == `"error"`) && i+1 < len(n.Args) && isLogCall(n.Fun) {
							t.Errorf("%s: an error logged under %s: use mc.LogError", fset.Position(lit.Pos()), lit.Value)
						}
					}
				case *ast.KeyValueExpr:
					if isIdent(n.Key, "Reason") && isString(n.Value) {
						t.Errorf("%s: a reason literal in a Reason field: use a constant of reason.go", fset.Position(n.Value.Pos()))
					}
				}
				return true
			})
		}
	}
}

func isString(e ast.Expr) bool {
	lit, ok := e.(*ast.BasicLit)
	return ok && lit.Kind == token.STRING && lit.Value != `""`
}

func isIdent(e ast.Expr, name string) bool {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name == name
	case *ast.SelectorExpr:
		return e.Sel.Name == name
	}
	return false
}

func isCall(fun ast.Expr, name string) bool {
	switch f := fun.(type) {
	case *ast.Ident:
		return f.Name == name
	case *ast.SelectorExpr:
		x, ok := f.X.(*ast.Ident)
		return ok && x.Name == "mc" && f.Sel.Name == name
	}
	return false
}

// isLogCall reports whether fun is a slog call that takes key-value pairs.
func isLogCall(fun ast.Expr) bool {
	sel, ok := fun.(*ast.SelectorExpr)
	if !ok {
		return false
	}
	switch sel.Sel.Name {
	case "Debug", "Info", "Warn", "Error", "Log", "With", "String", "Any", "DebugContext", "InfoContext", "WarnContext", "ErrorContext":
		return true
	}
	return false
}
