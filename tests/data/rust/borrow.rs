fn consume(v: Vec<i32>) -> usize {
    v.len()
}

fn main() {
    let v = vec![1, 2, 3];
    let unused = 5;
    let mut count = 0;
    let n = consume(v);
    println!("{} {} {}", n, v.len(), count);
    let other = 6;
}
