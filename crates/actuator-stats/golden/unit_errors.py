# Independent computation of the per-unit error comparison (UnitErrors) for the golden test.
from fractions import Fraction as F
ct_n=[1,3,0,50,2,10,0,4]; ct_s=[0,1,0,6,0,1,0,0]
cc_n=[2,5,120,1,8,0,3,6]; cc_s=[0,0,5,1,1,0,0,1]
def rate(n,s): return F(sum(s),sum(n))
num=F(0);den=F(0)
for n,s in ((ct_n,ct_s),(cc_n,cc_s)):
    p=rate(n,s); q=p*(1-p)
    for nb,sb in zip(n,s):
        if nb==0: continue
        num+= (sb-p*nb)**2/(nb*q)-1; den+=nb-1
rho=min(max(num/den,0),1)
print("rho",float(rho), rho)
def weigh(n,s):
    W=[1/(1+(nb-1)*rho) if nb>0 else 0 for nb in n]
    return [w*nb for w,nb in zip(W,n)],[w*sb for w,sb in zip(W,s)]
def var(n,s):
    N=sum(n); r=sum(s)/N; g=0; sw=0; jk=0
    for nb,sb in zip(n,s):
        if nb<=0: continue
        g+=1; e=sb-r*nb; sw+=e*e; jk+=(e/(N-nb))**2
    return max(F(g,g-1)*sw/N**2, F(g-1,g)*jk)
def deff(n,s):
    N=sum(n); r=sum(s)/N
    return max(var(n,s)/(r*(1-r)/N),1)
tn,ts=weigh(ct_n,ct_s); cn,cs=weigh(cc_n,cc_s)
print("canary m x", float(sum(tn)), float(sum(ts)), "rate", float(sum(ts)/sum(tn)))
print("control m x", float(sum(cn)), float(sum(cs)), "rate", float(sum(cs)/sum(cn)))
dt=deff(tn,ts); dc=deff(cn,cs); d=max(dt,dc)
print("deff", float(dt), float(dc))
print("share", float(sum(tn)/(sum(tn)+sum(cn))))
print("events", float(sum(ts)/d), float(sum(cs)/d), round(sum(ts)/d), round(sum(cs)/d))
