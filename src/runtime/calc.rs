//! A safe arithmetic evaluator for the `calculator` tool: a recursive-descent parser over
//! numbers, `+ - * / % ^`, parentheses and unary minus. No names, no calls, no code.

/// Evaluates `expr`; errors say what is wrong so the model can correct itself.
pub fn eval(expr: &str) -> Result<f64, String> {
    if expr.len() > 1000 {
        return Err("expression too long (max 1000 characters)".into());
    }
    let tokens: Vec<char> = expr.chars().filter(|c| !c.is_whitespace()).collect();
    let mut p = Parser {
        t: &tokens,
        i: 0,
        depth: 0,
    };
    let v = p.sum()?;
    if p.i != tokens.len() {
        return Err(format!("unexpected '{}' at position {}", tokens[p.i], p.i));
    }
    if !v.is_finite() {
        return Err("the result is not a finite number".into());
    }
    Ok(v)
}

struct Parser<'a> {
    t: &'a [char],
    i: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.t.get(self.i).copied()
    }

    fn sum(&mut self) -> Result<f64, String> {
        let mut v = self.product()?;
        while let Some(op @ ('+' | '-')) = self.peek() {
            self.i += 1;
            let r = self.product()?;
            v = if op == '+' { v + r } else { v - r };
        }
        Ok(v)
    }

    fn product(&mut self) -> Result<f64, String> {
        let mut v = self.unary()?;
        while let Some(op @ ('*' | '/' | '%')) = self.peek() {
            self.i += 1;
            let r = self.unary()?;
            if op != '*' && r == 0.0 {
                return Err("division by zero".into());
            }
            v = match op {
                '*' => v * r,
                '/' => v / r,
                _ => v % r,
            };
        }
        Ok(v)
    }

    /// `^` binds tighter than a leading minus (`-2^2` is -4) and to the right.
    fn power(&mut self) -> Result<f64, String> {
        let base = self.atom()?;
        if self.peek() == Some('^') {
            self.i += 1;
            let exp = self.unary()?;
            return Ok(base.powf(exp));
        }
        Ok(base)
    }

    fn unary(&mut self) -> Result<f64, String> {
        match self.peek() {
            Some('-') => {
                self.i += 1;
                Ok(-self.unary()?)
            }
            Some('+') => {
                self.i += 1;
                self.unary()
            }
            _ => self.power(),
        }
    }

    fn atom(&mut self) -> Result<f64, String> {
        match self.peek() {
            Some('(') => {
                self.depth += 1;
                if self.depth > 64 {
                    return Err("parentheses nested too deeply".into());
                }
                self.i += 1;
                let v = self.sum()?;
                if self.peek() != Some(')') {
                    return Err("missing ')'".into());
                }
                self.i += 1;
                self.depth -= 1;
                Ok(v)
            }
            Some(c) if c.is_ascii_digit() || c == '.' => {
                let start = self.i;
                while self.peek().is_some_and(|c| c.is_ascii_digit() || c == '.') {
                    self.i += 1;
                }
                let s: String = self.t[start..self.i].iter().collect();
                s.parse::<f64>().map_err(|_| format!("bad number '{s}'"))
            }
            Some(c) => Err(format!("unexpected '{c}' at position {}", self.i)),
            None => Err("unexpected end of expression".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::eval;

    #[test]
    fn arithmetic_with_precedence() {
        assert_eq!(eval("2 + 3 * 4").unwrap(), 14.0);
        assert_eq!(eval("(2 + 3) * 4").unwrap(), 20.0);
        assert_eq!(eval("-2 ^ 2").unwrap(), -4.0);
        assert_eq!(eval("2 ^ 3 ^ 2").unwrap(), 512.0);
        assert_eq!(eval("10 % 4 / 2").unwrap(), 1.0);
        assert_eq!(eval("1.5 * 2").unwrap(), 3.0);
    }

    #[test]
    fn rejects_anything_but_arithmetic() {
        assert!(eval("1/0").is_err());
        assert!(eval("2 +").is_err());
        assert!(eval("abs(2)").is_err());
        assert!(eval("(1").is_err());
        assert!(eval("1..2").is_err());
        assert!(eval(&"(".repeat(100)).is_err());
    }
}
